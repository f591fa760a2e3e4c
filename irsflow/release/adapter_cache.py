"""The local adapter cache: whatever reads an adapter (evaluation, training from the champion, vLLM)
gets a checked local copy, never the artifact URI.

    resolve_adapter("registry:champion")          # <cache dir>/irsflow-adapter/v3-1a2b3c4d5e6f
    resolve_adapter("models:/irsflow-adapter/3")  # the same folder; "path/to/adapter" is only checked
    check_adapter("path/to/adapter")              # loadable PEFT folder, or InputError

A registry version's files are downloaded through MLflow (``mlflow.artifacts.download_artifacts``,
which goes through the server's artifact proxy) into ``<cache dir>/<model name>/v<version>-<hash of
its tracking and source URIs>``. The download lands in a temp folder beside it, is checked to load
(``check_adapter``), then renamed into place, so a folder there is complete; a second resolve reuses
it without downloading. The hash keeps a version number reused by another registry from hitting a
stale copy. The cache dir is ``TrackingSettings.cache_dir``, else ``$IRSFLOW_ADAPTER_CACHE``, else
``<data dir>/adapter_cache``.

How vLLM sees the files: the path sent to ``/v1/load_lora_adapter`` is that local copy, and vLLM
reads it from its own filesystem. Put the cache dir on a volume the vLLM server mounts at the same
path (e.g. ``-v /srv/irsflow/adapter_cache:/srv/irsflow/adapter_cache`` on the vLLM container, and
``IRSFLOW_ADAPTER_CACHE=/srv/irsflow/adapter_cache`` where the gate runs); the gate checks that
``/v1/models`` reports exactly that path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from irsflow.errors import InputError
from irsflow.store import data_dir

if TYPE_CHECKING:
    from irsflow.release.registry import TrackingSettings

log = logging.getLogger("irsflow.release.adapter_cache")


def cache_root(cache_dir: str | None = None) -> Path:
    """``cache_dir``, else ``$IRSFLOW_ADAPTER_CACHE``, else ``<data dir>/adapter_cache``; absolute."""
    root = cache_dir or os.environ.get("IRSFLOW_ADAPTER_CACHE") or data_dir() / "adapter_cache"
    return Path(root).expanduser().resolve()


def check_adapter(path: str | Path, name: str | None = None) -> Path:
    """A loadable PEFT adapter folder, checked before any alias moves: adapter_config.json parses
    and names a peft type, and the weights file's header reads. ``name``: what errors call it."""
    p = Path(path)
    name = name or str(p)
    cfg = p / "adapter_config.json"
    if not cfg.is_file():
        raise InputError(f"adapter {name}: no adapter_config.json")
    try:
        if not json.loads(cfg.read_text(encoding="utf-8")).get("peft_type"):
            raise InputError(f"adapter {name}: adapter_config.json names no peft_type")
    except ValueError:
        raise InputError(f"adapter {name}: adapter_config.json is not valid JSON") from None
    weights = p / "adapter_model.safetensors"
    if not weights.is_file():
        raise InputError(f"adapter {name}: no adapter_model.safetensors")
    try:
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as f:
            if not list(f.keys()):
                raise InputError(f"adapter {name}: adapter_model.safetensors holds no tensors")
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - any header/format error means a broken file
        raise InputError(f"adapter {name}: adapter_model.safetensors does not load ({err})") from None
    return p


class AdapterCache:
    """Local copies of one registered model's adapter versions, under ``<root>/<model name>``."""

    def __init__(self, root: Path, model_name: str, tracking_uri: str):
        self.root, self.model_name, self.tracking_uri = Path(root), model_name, tracking_uri

    @property
    def model_dir(self) -> Path:
        return self.root / self.model_name

    def slot(self, version: str, source: str) -> Path:
        """Where version ``version`` (files at ``source``) is kept locally."""
        key = hashlib.sha256(f"{self.tracking_uri}\n{source}".encode()).hexdigest()[:12]
        return self.model_dir / f"v{version}-{key}"

    @contextmanager
    def scratch(self, prefix: str) -> Iterator[Path]:
        """A temp folder beside the slots (same filesystem, so ``install`` is a rename); removed after."""
        self.model_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=self.model_dir))
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def download_checked(self, source: str, tmp: Path, name: str) -> Path:
        """The files at artifact URI ``source``, downloaded through MLflow into ``tmp`` and checked."""
        import mlflow

        got = mlflow.artifacts.download_artifacts(
            artifact_uri=source, dst_path=str(tmp), tracking_uri=self.tracking_uri
        )
        return check_adapter(got, name=name)

    def install(self, got: Path, slot: Path) -> Path:
        """Rename a checked download into its cache slot (atomic: a slot that exists is complete)."""
        try:
            os.rename(got, slot)
        except OSError:
            if not (slot / "adapter_config.json").is_file():  # not a concurrent resolve that won
                raise
        return slot

    def local_copy(self, version: str, source: str) -> Path:
        """The cached copy of a version's adapter, downloaded on first use."""
        slot = self.slot(version, source)
        if slot.is_dir():
            return slot
        with self.scratch(f".{slot.name}.") as tmp:
            got = self.download_checked(source, tmp, f"{self.model_name} version {version} ({source})")
            log.info("downloaded %s version %s from %s to %s", self.model_name, version, source, slot)
            return self.install(got, slot)


def resolve_adapter(spec: str | None, settings: TrackingSettings | None = None) -> str | None:
    """An adapter given as a folder, or from the registry: ``registry:champion`` / ``registry:3``
    or MLflow's ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION`` (its local copy in the cache).
    Checked to load; None stays None."""
    if not spec:
        return None
    # The registry builds on this module (its cache), so it is imported here, not at the top.
    from irsflow.release.registry import Registry, TrackingSettings

    settings = settings or TrackingSettings()
    ref, name = None, settings.model_name
    if spec.startswith("registry:"):
        ref = spec.split(":", 1)[1]
    elif spec.startswith("models:/"):
        body = spec.removeprefix("models:/")
        name, ref = body.split("@", 1) if "@" in body else body.rsplit("/", 1) if "/" in body else (body, "")
    if ref is not None:
        path = Registry(settings.model_copy(update={"model_name": name})).adapter_path(ref)
        if path is None:
            raise InputError(f"adapter: {spec!r} names no version of {name!r} in the registry")
        return path
    return str(check_adapter(Path(spec).expanduser()))
