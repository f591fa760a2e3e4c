"""irsflow: iterative rejection sampling (generate -> score on CPU -> LoRA SFT) for small chat
models on one GPU. This package is the Prefect-free core; ``flows/`` and ``tasks/`` wrap it."""

__version__ = "0.1.0"
