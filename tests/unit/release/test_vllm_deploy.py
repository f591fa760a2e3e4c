"""Hot-loading an adapter into the vLLM stand-in (tests/support/fake_vllm.py, which answers with the real
server's codes and texts): loaded under a stable name (first time without ``load_inplace``, then in
place, or unload + load with ``switch="reload"``), verified through /v1/models and a chat
completion; failures keep the previous adapter served. Against a real vLLM: tests/ops/test_vllm_real.py."""

import json

import pytest

from irsflow.release.serving import DeployError, VLLMSettings, hot_load
from tests.support.fake_vllm import FakeVLLM


def adapter(tmp_path, name: str) -> str:
    d = tmp_path / name
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    return str(d)


@pytest.fixture
def vllm():
    with FakeVLLM() as v:
        yield v


def test_load_then_replace(vllm, tmp_path):
    s = VLLMSettings(base_url=vllm.base_url, serving_name="assistant")
    v1, v2, v3 = adapter(tmp_path, "v1"), adapter(tmp_path, "v2"), adapter(tmp_path, "v3")
    out = hot_load(s, v1)
    assert out["verify_reply"] == "OK" and vllm.adapters == {"assistant": v1}
    hot_load(s, v2, previous=v1)
    assert vllm.adapters == {"assistant": v2}
    hot_load(s.model_copy(update={"switch": "reload"}), v3, previous=v2)
    assert vllm.adapters == {"assistant": v3}
    # first load without the flag (vLLM keeps it on the adapter), then in place, then unload + load
    assert [(b["lora_path"], b["load_inplace"]) for b in vllm.loads()] == [(v1, False), (v2, True), (v3, False)]
    assert [b["lora_name"] for p, b in vllm.calls if p == "/v1/unload_lora_adapter"] == ["assistant"]
    chats = [b for p, b in vllm.calls if p == "/v1/chat/completions"]
    assert [c["model"] for c in chats] == ["assistant"] * 3  # the verification names the adapter


def test_expected_reply_is_checked(vllm, tmp_path):
    s = VLLMSettings(base_url=vllm.base_url, serving_name="assistant")
    v1 = adapter(tmp_path, "v1")
    hot_load(s, v1, expect="OK")
    with pytest.raises(DeployError, match=r"answered 'OK' .* not the adapter's 'Hi'; restored .*v1"):
        hot_load(s, adapter(tmp_path, "v2"), previous=v1, expect="Hi")
    assert vllm.adapters == {"assistant": v1}


def test_failures_keep_the_previous_adapter_served(vllm, tmp_path):
    s = VLLMSettings(base_url=vllm.base_url, serving_name="assistant")
    v1 = adapter(tmp_path, "v1")
    hot_load(s, v1)
    with pytest.raises(DeployError, match=r"HTTP 404: Loading lora assistant failed: No adapter found for <path>"):
        hot_load(s, str(tmp_path / "missing"), previous=v1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DeployError, match="HTTP 404: .*No adapter found for <path>"):
        hot_load(s, str(tmp_path / "empty"), previous=v1)
    bad = adapter(tmp_path, "bad")
    (tmp_path / "bad" / "adapter_config.json").write_text("{not json")
    with pytest.raises(DeployError, match="HTTP 500: Call to add_lora method failed"):
        hot_load(s, bad, previous=v1)
    assert vllm.adapters == {"assistant": v1}
    vllm.fail_next = {"/v1/chat/completions": 500}  # loads, but does not answer: roll back
    with pytest.raises(DeployError, match=r"HTTP 500: scripted failure; restored .*v1"):
        hot_load(s, adapter(tmp_path, "v2"), previous=v1)
    assert vllm.adapters == {"assistant": v1}
    vllm.fail_next = {"/v1/chat/completions": 500}  # first deployment ever: unload the bad one
    s2 = VLLMSettings(base_url=vllm.base_url, serving_name="fresh")
    with pytest.raises(DeployError, match="unloaded the new adapter"):
        hot_load(s2, adapter(tmp_path, "v3"))
    assert "fresh" not in vllm.adapters


def test_an_unreachable_server_is_a_transient_failure(tmp_path):
    import httpx

    from irsflow.retry import failure_kind

    s = VLLMSettings(base_url="http://127.0.0.1:9/v1", timeout_s=2)
    with pytest.raises(httpx.ConnectError) as err:  # Prefect retries it; nothing was changed
        hot_load(s, adapter(tmp_path, "v1"))
    assert failure_kind(err.value) == "transient"
