"""Files a request names stay inside the allowed roots (irsflow/paths.py), and are read safely.

Every request field that names a file refuses a path outside the data dir, the package's shipped
data and $IRSFLOW_ALLOWED_ROOTS, symlinks resolved first, with a message that does not depend on
whether the path exists. Inside the roots a directory, FIFO or device is named for what it is and
never read (a FIFO would block its reader forever, /dev/zero would fill memory).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from irsflow.config import parse_request
from irsflow.dataset import load_questions
from irsflow.errors import ConfigError, InputError
from irsflow.paths import read_bytes
from tests.support.local import ROOT

# field -> how a request names one path in it
FIELDS = {
    "dataset": lambda p: {"dataset": p},
    "scoring.rules": lambda p: {"scoring": {"rules": p}},
    "scoring.embedder": lambda p: {"scoring": {"embedder": p}},
    "scoring.reranker_path": lambda p: {"scoring": {"reranker_path": p}},
    "scoring.reward_model": lambda p: {"scoring": {"reward_model": p}},
    "model_id": lambda p: {"model_id": p},
    "init_adapter": lambda p: {"init_adapter": p},
    "codebook.path": lambda p: {"codebook": {"path": p}},
    "teacher.cache_path": lambda p: {"teacher": {"cache_path": p}},
    "stage_config.pairs.0": lambda p: {"stage": "DPO", "stage_config": {"pairs": [p]}},
    "stage_config.kto_up": lambda p: {"stage": "KTO", "stage_config": {"kto_up": p, "kto_down": p}},
    "stage_config.anchors": lambda p: {"stage": "ONPOLICY", "stage_config": {"anchors": p}},
}
# fields naming a file the job writes: confined to the writable roots (the data dir unless the operator adds some)
WRITTEN = {"codebook.path": "IRSFLOW_WRITABLE_ROOTS", "teacher.cache_path": "IRSFLOW_WRITABLE_ROOTS"}
# what exists (a secret, a private key, a directory) and what does not must read the same
OUTSIDE = ["/etc/shadow", "/etc/passwd", "/root/.ssh/id_rsa", "/etc", "/nonexistent/x.jsonl", "/etc/x/c.sqlite"]


@pytest.fixture()
def roots(data_dir, monkeypatch):
    """Only the data dir (and the shipped data): the operator lists no extra roots."""
    monkeypatch.delenv("IRSFLOW_ALLOWED_ROOTS", raising=False)
    monkeypatch.delenv("IRSFLOW_WRITABLE_ROOTS", raising=False)
    data_dir.mkdir(parents=True)
    return data_dir


def refusal(body: dict) -> str:
    with pytest.raises(ConfigError) as err:
        parse_request(body)
    return str(err.value)


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_a_path_outside_the_roots_is_refused_without_saying_whether_it_exists(roots, field):
    messages = set()
    for path in OUTSIDE:
        msg = refusal(FIELDS[field](path))
        kind = "writable" if field in WRITTEN else "allowed"
        assert f"{field}: {path!r} is outside the {kind} roots ({roots}" in msg, msg
        assert WRITTEN.get(field, "IRSFLOW_ALLOWED_ROOTS") in msg
        messages.add(msg.replace(repr(path), "<path>"))
    assert len(messages) == 1, messages  # the same words whatever is (or is not) there
    (only,) = messages
    for word in ("no such", "exist", "JSON", "directory", "permission"):
        assert word not in only, only


def test_the_teacher_cache_outside_the_roots_is_never_created(roots, tmp_path):
    outside = tmp_path / "elsewhere" / "c.sqlite"
    refusal({"teacher": {"cache_path": str(outside)}, "irs_config": {"dw_config": {"initial_weights": {"teacher": 1}}}})
    assert not outside.parent.exists()


def test_the_cli_refuses_before_creating_anything(roots, tmp_path):
    outside = tmp_path / "elsewhere"
    req = tmp_path / "req.json"
    req.write_text(
        json.dumps(
            {
                "teacher": {"cache_path": str(outside / "c.sqlite")},
                "irs_config": {"dw_config": {"initial_weights": {"teacher": 1.0}}},
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if k not in ("IRSFLOW_ALLOWED_ROOTS", "IRSFLOW_WRITABLE_ROOTS")}
    r = subprocess.run(
        [sys.executable, "-m", "cli", "train", "--request", str(req)],
        cwd=ROOT,
        timeout=120,
        env={**env, "IRSFLOW_DATA_DIR": str(roots)},
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "teacher.cache_path" in r.stderr and "outside the writable roots" in r.stderr, r.stderr
    assert not outside.exists() and not (roots / "jobs").exists()


def test_symlinks_are_resolved_before_the_check(roots):
    (roots / "leak.jsonl").symlink_to("/etc/passwd")
    (roots / "up").symlink_to("..")
    for path in (roots / "leak.jsonl", roots / "up" / "secret.jsonl", f"{roots}/../x.jsonl"):
        assert "outside the allowed roots" in refusal({"dataset": str(path)})
    inside = roots / "q.jsonl"
    inside.write_text('{"question": "Why?"}\n')
    (roots / "alias.jsonl").symlink_to(inside)
    assert parse_request({"dataset": str(roots / "alias.jsonl")}).dataset == str(roots / "alias.jsonl")


def test_the_operator_lists_more_roots(roots, tmp_path, monkeypatch):
    extra, other = tmp_path / "shared-data", tmp_path / "other"
    for d in (extra, other):
        d.mkdir()
        (d / "q.jsonl").write_text('{"question": "Why?"}\n')
    assert "outside the allowed roots" in refusal({"dataset": str(extra / "q.jsonl")})
    monkeypatch.setenv("IRSFLOW_ALLOWED_ROOTS", os.pathsep.join([str(extra), str(tmp_path / "nope")]))
    assert parse_request({"dataset": str(extra / "q.jsonl")}).dataset == str(extra / "q.jsonl")
    assert "outside the allowed roots" in refusal({"dataset": str(other / "q.jsonl")})


def test_shipped_names_and_hub_ids_are_not_paths(roots):
    req = parse_request(
        {
            "dataset": "builtin:redteam",
            "scoring": {"rules": "builtin:default"},
            "model_id": "Qwen/Qwen2.5-0.5B-Instruct",
            "init_adapter": "registry:champion",
        }
    )
    assert req.model_id == "Qwen/Qwen2.5-0.5B-Instruct"
    assert parse_request({"init_adapter": "models:/irsflow@champion"}).init_adapter == "models:/irsflow@champion"


@pytest.mark.parametrize("field", ["dataset", "scoring.rules", "scoring.embedder", "model_id"])
def test_a_builtin_name_is_not_a_way_out(roots, field):
    for spec in ("builtin:../../../../etc/passwd", "builtin:demo/../../x", "builtin:"):
        assert f"{field}: {spec!r} is not a builtin name" in refusal(FIELDS[field](spec))


def test_a_dataset_that_is_a_directory_or_a_fifo_says_so(roots):
    folder, fifo = roots / "set", roots / "set.fifo"
    folder.mkdir()
    os.mkfifo(fifo)
    with pytest.raises(InputError, match=r"dataset: .*set is a directory, not a JSONL file"):
        load_questions(str(folder))
    t0 = time.monotonic()
    with pytest.raises(InputError, match=r"dataset: .*set\.fifo is a FIFO \(named pipe\), not a JSONL file"):
        load_questions(str(fifo))
    assert time.monotonic() - t0 < 1
    with pytest.raises(InputError, match=r"dataset: no such file: .*none\.jsonl"):
        load_questions(str(roots / "none.jsonl"))


def test_rules_that_are_a_fifo_or_a_device_are_refused_at_once(roots, monkeypatch):
    fifo = roots / "rules.fifo"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    assert "scoring.rules: " in refusal({"scoring": {"rules": str(fifo)}})
    assert "is a FIFO (named pipe), not a rules file" in refusal({"scoring": {"rules": str(fifo)}})
    monkeypatch.setenv("IRSFLOW_ALLOWED_ROOTS", "/dev")  # even where an operator allowed /dev
    assert "/dev/zero is a device, not a rules file" in refusal({"scoring": {"rules": "/dev/zero"}})
    assert time.monotonic() - t0 < 2


def test_reads_are_regular_files_of_bounded_size(roots, monkeypatch):
    big = roots / "big.jsonl"
    big.write_bytes(b"x" * 5000)
    with pytest.raises(InputError, match=r"pairs: .*big\.jsonl is 5000 bytes, more than the limit of 4096"):
        read_bytes("pairs", big, limit=4096)
    monkeypatch.setenv("IRSFLOW_MAX_INPUT_BYTES", "100")
    with pytest.raises(InputError, match="IRSFLOW_MAX_INPUT_BYTES"):
        read_bytes("pairs", big)
    with pytest.raises(InputError, match="is a device, not a regular file"):
        read_bytes("pairs", "/dev/zero")
    assert read_bytes("pairs", big, limit=5000) == b"x" * 5000


# A prefix that names no file must be matched whole: "registry:/../.." is a relative path the moment a
# folder named "registry:" exists where the worker runs (and a teacher cache could have made one).
PREFIXED = [
    "registry:/" + "../" * 20 + "etc/passwd",
    "models:/" + "../" * 20 + "etc/passwd",
    "registry:x/..",
    "builtin:../../etc/passwd",
    "a/../../etc/passwd",
]


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_a_prefix_never_smuggles_a_path_past_the_roots(roots, field, tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    (cwd / "registry:").mkdir(parents=True)
    (cwd / "models:").mkdir()
    (cwd / "registry:x").mkdir()
    monkeypatch.chdir(cwd)
    for value in PREFIXED:
        msg = refusal(FIELDS[field](value))
        assert field in msg and ("outside the" in msg or "not a builtin name" in msg), (value, msg)


def test_registry_references_and_hub_ids_pass_only_whole(roots):
    for ref in ("registry:champion", "registry:3", "models:/irsflow-adapter@champion", "models:/irsflow/12"):
        assert parse_request({"init_adapter": ref}).init_adapter == ref
    assert parse_request({"model_id": "Qwen/Qwen2.5-0.5B-Instruct"}).model_id == "Qwen/Qwen2.5-0.5B-Instruct"
    for bad in ("registry:champion/../../x", "models:/..@x", "models:/a@b/../../c"):
        assert "init_adapter" in refusal({"init_adapter": bad})
    assert "model_id" in refusal({"model_id": "registry:champion"})  # a registry reference is an adapter's


def test_a_written_file_must_be_new_or_irsflows_own(roots):
    import sqlite3

    other = roots / "mlflow" / "mlflow.db"  # inside the data dir, but another program's database
    other.parent.mkdir()
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE runs (id TEXT)")
    con.commit()
    con.close()
    before = other.read_bytes()
    for body, field in (
        ({"teacher": {"cache_path": str(other)}}, "teacher.cache_path"),
        ({"codebook": {"path": str(other)}}, "codebook.path"),
    ):
        msg = refusal(body)
        assert field in msg and "is not irsflow's" in msg, msg
    (roots / "notes.txt").write_text("hello")
    assert "is not irsflow's" in refusal({"teacher": {"cache_path": str(roots / "notes.txt")}})
    assert "a directory" in refusal({"codebook": {"path": str(roots / "mlflow")}})
    assert other.read_bytes() == before and not (roots / "mlflow" / "mlflow.db-wal").exists()
    fresh = roots / "teacher" / "mine.sqlite"
    assert parse_request({"teacher": {"cache_path": str(fresh)}}).teacher.cache_path == fresh


def test_lora_target_modules_are_names_not_patterns(roots):
    assert "target_modules" in refusal({"irs_config": {"lora": {"target_modules": "(.*.*)*y"}}})
    assert "target_modules" in refusal({"irs_config": {"lora": {"target_modules": ["(.*.*)*y"]}}})
    ok = parse_request({"irs_config": {"lora": {"target_modules": ["q_proj", "v_proj"]}}})
    assert ok.shared.lora.target_modules == ["q_proj", "v_proj"]
