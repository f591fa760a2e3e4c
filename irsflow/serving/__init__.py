"""Serving adapters: hot-loading LoRA adapters into a running vLLM OpenAI server (``vllm.py``)."""
