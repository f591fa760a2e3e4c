"""Atomic writes: a failure never leaves a torn or half-written file or folder."""

import json

import pytest

from irsflow.store import JobStore, append_jsonl, atomic_dir, atomic_write_json, hash_path, read_jsonl


def test_atomic_write_replaces_whole_and_leaves_no_temp(tmp_path):
    p = tmp_path / "a.json"
    atomic_write_json(p, {"v": 1})
    atomic_write_json(p, {"v": 2})
    assert json.loads(p.read_text()) == {"v": 2}
    assert [f.name for f in tmp_path.iterdir()] == ["a.json"]


def test_failed_write_keeps_the_old_file(tmp_path):
    p = tmp_path / "a.json"
    atomic_write_json(p, {"v": 1})
    with pytest.raises(TypeError):
        atomic_write_json(p, {"v": object()})  # not serialisable: fails before the rename
    assert json.loads(p.read_text()) == {"v": 1}
    assert len(list(tmp_path.iterdir())) == 1


def test_append_jsonl_keeps_rows(tmp_path):
    p = tmp_path / "m.jsonl"
    append_jsonl(p, [{"a": 1}])
    append_jsonl(p, [{"a": 2}, {"a": 3}])
    assert [r["a"] for r in read_jsonl(p)] == [1, 2, 3]


def test_atomic_dir_keeps_old_folder_on_failure(tmp_path):
    target = tmp_path / "adapter"
    with atomic_dir(target) as tmp:
        (tmp / "w.bin").write_bytes(b"one")
    h = hash_path(target)
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "w.bin").write_bytes(b"two")
            raise RuntimeError("crash mid-save")
    assert (target / "w.bin").read_bytes() == b"one" and hash_path(target) == h
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]
    with atomic_dir(target) as tmp:
        (tmp / "w.bin").write_bytes(b"two")
    assert hash_path(target) != h


def test_job_store_layout(tmp_path):
    s = JobStore("train_20260101T000000Z-abcd", root=tmp_path)
    assert s.job_id == "20260101T000000Z-abcd"
    assert s.dir == tmp_path / "jobs" / "train_20260101T000000Z-abcd"
    s.create({"x": 1})
    s.metric(1, "GENERATING", progress=10)
    s.update_status(state="running")
    assert s.read_metrics()[0]["phase"] == "GENERATING" and s.read_status()["state"] == "running"
    assert s.checkpoint(2).name == "iter_2" and s.checkpoint("final").name == "final"
    with pytest.raises(ValueError):
        JobStore("../escape", root=tmp_path)
