"""What the test tiers share, imported one way: ``from tests.support.<module> import ...``.

    local           the checkout's root, the virtualenv's bin folder, a free port on 127.0.0.1
    jobs            requests, jobs, adapters and MC sets on the tiny model
    http_reply      a threaded HTTP server on 127.0.0.1 and its JSON replies (the fakes build on it)
    fake_openai     an OpenAI-compatible teacher (DeepSeek V4's wire format)
    fake_langfuse   Langfuse's public read API, both generations
    fake_vllm       vLLM's OpenAI server with runtime LoRA loading
    vllm_adapters   tiny LoRA adapters and greedy probes for the real-vLLM tests
    real_services   real outside servers from their own virtualenvs, started once per session
    prefect_runs    reading flow and task runs back from a Prefect server
    browser         headless Chromium over the DevTools protocol
    helpers/        scripts the tests start as processes (by module name or by path)

Fixtures are not here: they live in tests/conftest.py.
"""
