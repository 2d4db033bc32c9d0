"""What a loaded cross-encoder really is: its checkpoint's head, its labels, the module to call.

A ``CrossEncoder`` built on a checkpoint without a trained classification head (a bi-encoder, a base
model) silently gets a random head and ranks at random. Instead of scraping transformers' load log,
:func:`inspect_cross_encoder` reads the checkpoint's tensor names (safetensors header, sharded index, or
the ``pytorch_model.bin`` state dict) and compares them with the model's own parameters.

One structural rule replaces per-checkpoint special cases: a checkpoint that carries a two-layer head's
``out_proj`` but not the ``dense`` layer before it was trained with a BERT-style head, ``out_proj``
on the first token (Capreolus/electra-base-msmarco, converted from TensorFlow, is one), so it is
scored that way instead of through a random ``dense`` layer.

:func:`sequence_classifier` tells the re-ranker which transformers model it may call directly.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Most preferred first, as transformers loads them.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin.index.json", "pytorch_model.bin")


def _weights_file(location: str, filename: str) -> str | None:
    """``filename`` in the model directory ``location``, or in the Hugging Face cache of hub id ``location``."""
    path = Path(location)
    if path.is_dir():
        return str(path / filename) if (path / filename).is_file() else None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(location, filename)
    return found if isinstance(found, str) else None  # None or a "known missing" sentinel


def checkpoint_keys(location: str) -> set[str] | None:
    """The tensor names stored in the checkpoint at ``location`` (a directory or a cached hub id), or None."""
    for filename in WEIGHT_FILES:
        path = _weights_file(location, filename)
        if path is None:
            continue
        if filename.endswith(".json"):
            return set(json.loads(Path(path).read_text(encoding="utf-8"))["weight_map"])
        if filename.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(path, framework="pt") as f:  # reads the header only
                return set(f.keys())
        import torch

        # mmap: the names without reading every tensor into memory
        return set(torch.load(path, map_location="cpu", weights_only=True, mmap=True))
    return None


def _cls_linear_head(out_proj: Any) -> Any:
    import torch

    class ClsLinearHead(torch.nn.Module):
        """BERT-style relevance head: ``out_proj(hidden[:, 0])`` (no dense layer, no activation)."""

        def __init__(self, proj: torch.nn.Linear):
            super().__init__()
            self.out_proj = proj

        def forward(self, features: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            return self.out_proj(features[:, 0, :])

    return ClsLinearHead(out_proj)


def _trained_as_bert_style_head(hf: Any, missing_head: list[str]) -> bool:
    """True when only the head's ``dense`` layer is missing while its ``out_proj`` was trained."""
    head = getattr(hf, "classifier", None)
    if not (hasattr(head, "dense") and hasattr(head, "out_proj")):
        return False
    return bool(missing_head) and all(k.startswith("classifier.dense.") for k in missing_head)


def sequence_classifier(model: Any) -> Any | None:
    """The transformers model to call directly, when ``model`` is the plain one-module torch kind.

    None for other layouts and backends (ONNX, OpenVINO, multi-module): those score through
    ``CrossEncoder.predict``.
    """
    try:
        from sentence_transformers.base.modules import Transformer
    except ImportError:  # pragma: no cover - other ST layouts
        return None
    if getattr(model, "backend", "torch") != "torch" or len(model) != 1 or not isinstance(model[0], Transformer):
        return None
    hf = model.transformers_model
    tok = getattr(model, "tokenizer", None)
    if hf is None or tok is None or not callable(tok) or not getattr(tok, "is_fast", False):
        return None
    if getattr(model[0], "transformer_task", "sequence-classification") != "sequence-classification":
        return None
    return hf


def cap_max_length(model: Any, max_length: int) -> None:
    """Cap the tokens ``model`` reads at its ``max_position_embeddings``: past them a long passage would
    index beyond the position table and fail, instead of being truncated."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(limit, int) and 0 < limit < (model.max_seq_length or max_length):
        model.max_seq_length = limit


def inspect_cross_encoder(model: Any, name: str, *, max_length: int) -> tuple[str, str] | None:
    """Check (and where needed adapt) a freshly loaded ``CrossEncoder``: None if usable, else (reason, fix).

    Adapts: a BERT-style trained head (see the module docstring); ``max_seq_length`` capped at the
    model's ``max_position_embeddings``. Refuses: a head the checkpoint does not carry; other than 1 or
    2 output labels. Models without a torch transformers model (ONNX, OpenVINO) skip the head check.
    """
    hf = getattr(model, "transformers_model", None)
    keys = checkpoint_keys(str(hf.name_or_path)) if hf is not None else None
    if keys is None:
        log.debug("cross-encoder %s: no readable checkpoint, head not checked", name)
    else:
        prefix = f"{hf.base_model_prefix}."
        own = list(hf.state_dict())
        missing_head = [k for k in own if not k.startswith(prefix) and k not in keys]
        # A checkpoint of the bare base model names its body tensors without the prefix.
        missing_body = [k for k in own if k.startswith(prefix) and k not in keys and k[len(prefix):] not in keys]
        if _trained_as_bert_style_head(hf, missing_head):
            hf.classifier = _cls_linear_head(hf.classifier.out_proj)
            log.info("cross-encoder %s: its checkpoint has a BERT-style head (out_proj on [CLS]); scoring so", name)
        elif missing_head:
            why = (
                f"the checkpoint has no trained classification head ({', '.join(missing_head)} would be random), "
                "so it is not a cross-encoder (a bi-encoder or a base model?)"
            )
            return why, "use a cross-encoder checkpoint"
        if missing_body:
            log.warning("cross-encoder %s: weights missing from the checkpoint (randomly initialised): %s", name, missing_body)
    cap_max_length(model, max_length)
    if model.num_labels not in (1, 2):
        why = (
            f"it has {model.num_labels} output labels; only 1-logit (sigmoid) and 2-logit (softmax, class 1 = "
            "relevant) relevance models are supported"
        )
        return why, "use a passage re-ranking cross-encoder"
    return None
