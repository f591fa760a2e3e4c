"""Hot-loading an adapter into a vLLM-shaped server on 127.0.0.1: in place under a stable name,
verified through /v1/models and a chat completion; failures keep the previous adapter served."""
import json

import pytest

from irsflow.serving.vllm import DeployError, VLLMClient, VLLMSettings, hot_load
from tests.fake_vllm import FakeVLLM


def adapter(tmp_path, name: str) -> str:
    d = tmp_path / name
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    return str(d)


@pytest.fixture
def vllm():
    with FakeVLLM() as v:
        yield v


def test_load_then_replace_in_place(vllm, tmp_path):
    s = VLLMSettings(base_url=vllm.base_url, serving_name="assistant")
    v1, v2 = adapter(tmp_path, "v1"), adapter(tmp_path, "v2")
    out = hot_load(s, v1)
    assert out["verify_reply"] == "OK" and vllm.adapters == {"assistant": v1}
    hot_load(s, v2, previous=v1)
    assert vllm.adapters == {"assistant": v2}
    assert [b["load_inplace"] for b in vllm.loads()] == [True, True]
    chats = [b for p, b in vllm.calls if p == "/v1/chat/completions"]
    assert [c["model"] for c in chats] == ["assistant", "assistant"]  # the verification names the adapter


def test_the_server_refuses_a_reload_without_load_inplace(vllm, tmp_path):
    s = VLLMSettings(base_url=vllm.base_url, serving_name="assistant")
    c = VLLMClient(s)
    c.load(adapter(tmp_path, "v1"))
    with pytest.raises(DeployError, match="HTTP 400: .*already been loaded"):
        c.load(adapter(tmp_path, "v2"), inplace=False)
    c.close()


def test_failures_keep_the_previous_adapter_served(vllm, tmp_path):
    s = VLLMSettings(base_url=vllm.base_url, serving_name="assistant")
    v1 = adapter(tmp_path, "v1")
    hot_load(s, v1)
    with pytest.raises(DeployError, match="HTTP 404: No adapter found"):  # missing folder: nothing changed
        hot_load(s, str(tmp_path / "missing"), previous=v1)
    broken = tmp_path / "broken"
    broken.mkdir()
    with pytest.raises(DeployError, match="HTTP 400: Invalid LoRA adapter"):
        hot_load(s, str(broken), previous=v1)
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
