"""Retries by kind: transient HTTP/connection failures retry through Prefect, bad input fails at
once, and running out of device memory retries inside the phase with a halved batch down to 1."""

from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

import httpx
import pytest
import torch
from prefect import task

from irsflow.config import TrainRequest
from irsflow.errors import InputError
from irsflow.jobs.job import create_job
from irsflow.loop.phases import run_generate, run_score
from irsflow.retry import OutOfMemory, failure_kind
from irsflow.stages import IterationInputs
from irsflow.stages.irs import IRS
from tasks.options import retry_if_transient
from tests.support.http_reply import LocalServer
from tests.support.jobs import tiny_request
from tests.support.local import free_port


@contextmanager
def flaky_server(codes):
    """An HTTP server on 127.0.0.1 answering the given status codes in turn (then 200)."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            code = codes[len(seen)] if len(seen) < len(codes) else 200
            seen.append(code)
            self.send_response(code)
            if code == 429:
                self.send_header("Retry-After", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    with LocalServer(Handler) as server:
        yield server.base_url + "/", seen


def _raised(fn):
    try:
        fn()
    except Exception as err:  # noqa: BLE001
        return err
    raise AssertionError("did not raise")


def test_failure_kinds_of_real_errors():
    with flaky_server([503, 429, 404]) as (url, _):
        kinds = [failure_kind(_raised(lambda: httpx.get(url).raise_for_status())) for _ in range(3)]
    assert kinds == ["transient", "transient", "fatal"]
    assert failure_kind(_raised(lambda: httpx.get(f"http://127.0.0.1:{free_port()}/", timeout=2))) == "transient"
    assert failure_kind(InputError("dataset: line 3: empty question")) == "input"
    assert failure_kind(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")) == "oom"
    assert failure_kind(OutOfMemory("every batch size")) == "oom"
    assert failure_kind(ZeroDivisionError()) == "fatal"
    try:  # wrapped errors are classified by their cause
        raise RuntimeError("scoring failed") from httpx.ConnectError("refused")
    except RuntimeError as err:
        assert failure_kind(err) == "transient"


def test_prefect_retries_transient_errors_and_not_bad_input(prefect_server):
    @task(retries=3, retry_delay_seconds=0, retry_condition_fn=retry_if_transient, persist_result=False)
    def call(url: str) -> int:
        r = httpx.get(url)
        r.raise_for_status()
        return r.status_code

    @task(retries=3, retry_delay_seconds=0, retry_condition_fn=retry_if_transient, persist_result=False)
    def bad(calls: list) -> None:
        calls.append(1)
        raise InputError("irs_config.n_candidates: must be >= 2")

    with flaky_server([503, 429]) as (url, seen):
        assert call(url) == 200
    assert seen == [503, 429, 200]
    with flaky_server([404]) as (url, seen):
        with pytest.raises(httpx.HTTPStatusError):
            call(url)
    assert seen == [404], "a 404 is not transient: no retry"
    calls: list = []
    with pytest.raises(InputError):
        bad(calls)
    assert calls == [1]


def test_a_rerun_of_a_round_the_job_does_not_have_fails_before_touching_it(prefect_server, tiny_model, data_dir):
    """The deployment's parameters (a --submit rerun, the UI's form) reach the flow unchecked: it refuses them."""
    from flows.train import train_job

    store = create_job(tiny_request(tiny_model, irs_config={"n_iterations": 1}))
    store.update_status(state="failed", error="earlier failure")
    before = store.status_path.read_bytes()
    with pytest.raises(InputError, match=rf"job {store.job_id} has rounds 1\.\.1; from_iteration 5 is outside them"):
        train_job(job_id=store.job_id, from_phase="SCORING", from_iteration=5)
    assert store.status_path.read_bytes() == before and not (store.dir / "phases").exists()


@contextmanager
def device_memory(max_batch: int):
    """Simulate a device that fits at most ``max_batch`` rows: every embedding lookup on a larger
    batch raises torch's own CUDA out-of-memory error (a global forward pre-hook, nothing of ours)."""
    seen = []

    def hook(module, args):
        if isinstance(module, torch.nn.Embedding) and args and args[0].dim() == 2:
            seen.append(args[0].shape[0])
            if args[0].shape[0] > max_batch:
                raise torch.OutOfMemoryError(
                    f"CUDA out of memory. Tried to allocate 2.00 GiB (batch {args[0].shape[0]})"
                )

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def test_oom_halves_the_batch_in_generate_and_sft(tiny_model, data_dir):
    req = TrainRequest.model_validate(
        tiny_request(
            tiny_model,
            n_questions=4,
            irs_config={"n_candidates": 2, "gen_batch_size": 4, "batch_size": 4, "n_iterations": 1},
        )
    )
    store = create_job(req)
    with device_memory(max_batch=4) as seen:
        gen = run_generate(store, req, 1, None)
    # 4 prompts x 2 samples = 8 rows OOM; 2 prompts x 2 samples fit
    assert gen["gen_batch_size"] == 2 and max(seen) == 8
    rows = [line for line in (store.phase_dir(1) / "candidates.jsonl").read_text().splitlines() if line]
    assert len(rows) == 4
    run_score(store, req, 1, dict(req.shared.dw_config.initial_weights), [])
    with device_memory(max_batch=1):
        ft = IRS.run_training(store, req, 1, IterationInputs(adapter=None, weights={}))
    assert (ft["batch_size"], ft["grad_accum"]) == (1, 4), "halved to 1, accumulation keeps the effective batch"
    assert (store.checkpoint(1) / "adapter_config.json").exists()
    train_rows = [r for r in store.read_metrics() if r["phase"] == "TRAINING" and "loss" in r]
    assert train_rows[-1]["batch_size"] == 1 and train_rows[-1]["grad_accum"] == 4

    with device_memory(max_batch=0):
        err = _raised(lambda: IRS.run_training(store, req, 1, IterationInputs(adapter=None, weights={})))
    assert isinstance(err, OutOfMemory) and failure_kind(err) == "oom"
    assert "irs_config.batch_size 4, 2, 1" in str(err) and "max_seq_length" in str(err)
