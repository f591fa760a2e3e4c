"""The weekly cycle's flow with nothing configured, against the session's Prefect server: no
Langfuse, no champion, so it trains and registers nothing and its report says so. The cycle's library
pieces: tests/unit/release/test_weekly.py; the deployment through a real worker:
tests/ops/test_weekly_cycle.py."""


def test_the_default_cycle_runs_on_the_embedded_stack_without_feedback(prefect_server, data_dir, monkeypatch):
    """No Langfuse configured, no champion: the cycle trains and registers nothing, and says so."""
    from flows.weekly_cycle import weekly_cycle

    for env in ("LANGFUSE_HOST", "LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY"):
        monkeypatch.delenv(env, raising=False)
    out = weekly_cycle()
    assert out["training"] is None and out["gate"] is None and out["champion_eval"] is None
    assert (
        out["outcome"]
        == "No new feedback: nothing trained or registered; no champion yet, the base model stays served."
    )
    assert out["came_in"]["etl_run"] is None and out["cost"] == {
        "teacher_calls": 0,
        "teacher_usd": 0.0,
        "gpu_minutes": 0.0,
    }
    assert "Nothing: no new feedback this week." in (data_dir / "weekly" / out["cycle_id"] / "report.md").read_text()
    assert not (data_dir / "jobs").exists()
