"""The loaded bi-encoder: ``BiEncoder.encode`` (array only) and the reduced-precision agreement check.

Loading lives in :mod:`query.models`; this module never touches the network or the file system.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from query.devices import autocast

#: Sentences used to check that reduced-precision encoding agrees with fp32 before it is used.
_AGREEMENT_PROBES = [
    "The quick brown fox jumps over the lazy dog.",
    "Glaciers form where snow accumulates faster than it melts, compacting into ice over centuries.",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
]
MIN_AGREEMENT_COSINE = 0.999


def count_tokens(tokenizer, texts: Sequence[str]) -> list[int]:
    """Tokens of each text by a Hugging Face ``tokenizer``, special tokens left out (fast tokenizers count
    thousands of texts per call). Not thread-safe by itself: a shared tokenizer is called under its model's lock."""
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False, truncation=False, verbose=False)["input_ids"]]


@dataclass
class BiEncoder:
    """A sentence-transformers bi-encoder with its device, precision and the name recorded in the index."""

    name: str
    model: object  # SentenceTransformer; typed loosely so importing this module stays cheap
    device: str
    precision: str
    batch_size: int
    # One process-wide model serves every thread (a program's, a service's): its fast tokenizer is not
    # thread-safe (a padded call beside an unpadded one raised "Unable to create tensor"), so calls take turns.
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def max_seq_length(self) -> int:
        return int(self.model.max_seq_length)

    @property
    def tokenizer(self):
        return self.model.tokenizer

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text, special tokens left out (thread-safe, as :meth:`encode`)."""
        with self._lock:
            return count_tokens(self.tokenizer, texts)

    def encode(self, texts: Sequence[str], *, batch_size: int | None = None) -> np.ndarray:
        """Encode ``texts`` to L2-normalised float32 vectors of shape ``(len(texts), dim)``."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock, autocast(self.device, self.precision):
            vectors = self.model.encode(
                list(texts),
                batch_size=batch_size or self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        # Autocast can hand back bf16/fp16-derived values; the contract is float32.
        return np.ascontiguousarray(vectors, dtype=np.float32)


def agreement(model, device: str, precision: str) -> float:
    """Minimum cosine between fp32 and ``precision`` embeddings of a few probe sentences."""
    ref = model.encode(_AGREEMENT_PROBES, normalize_embeddings=True, convert_to_numpy=True)
    with autocast(device, precision):
        low = model.encode(_AGREEMENT_PROBES, normalize_embeddings=True, convert_to_numpy=True)
    return float(np.min(np.sum(ref * np.asarray(low, dtype=np.float32), axis=1)))
