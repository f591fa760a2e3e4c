"""The vLLM client sends the vLLM server's key and no other: settings name the variable holding it,
and only a ``VLLM_*`` name is accepted, so no setting can hand the teacher's or Langfuse's key to the
vLLM endpoint. The receiver is a real HTTP listener on 127.0.0.1 recording every header."""

import pytest
from pydantic import ValidationError

from irsflow.release.serving import DeployError, VLLMClient, VLLMSettings
from tests.support.listener import Listener


@pytest.mark.parametrize("name", ["DEEPSEEK_API_KEY", "LANGFUSE_SECRET_KEY", "IRSFLOW_API_TOKEN", "vllm_api_key"])
def test_another_services_key_cannot_be_named(name):
    with pytest.raises(ValidationError, match="api_key_env"):
        VLLMSettings(api_key_env=name)


def test_only_the_vllm_key_is_sent(monkeypatch):
    monkeypatch.setenv("VLLM_API_KEY", "vllm-key-1")
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-teacher-2")
    with Listener() as ear:
        client = VLLMClient(VLLMSettings(base_url=ear.base_url, timeout_s=5))
        try:
            with pytest.raises(DeployError):
                client.load("/adapters/a")
        finally:
            client.close()
    assert ear.credentials() == ["Bearer vllm-key-1"]
