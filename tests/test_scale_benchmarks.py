"""The scale-out benchmarks' own logic: the big-dump generator and the GPU batch search (no GPU needed)."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from tasks.fetch import SourceSpec, parse_dump_lines
from tests.conftest import REPO


def _benchmark(name: str):
    sys.path.insert(0, str(REPO / "benchmarks"))  # stream_memory imports its sibling tiny_bi_encoder
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_stream_memory_dump_is_a_beir_dump_the_flow_reads_with_realistic_paragraphs(tmp_path):
    stream_memory = _benchmark("stream_memory")
    dump = tmp_path / "dump.jsonl"
    size = stream_memory.write_dump(dump, 1200)
    lines = dump.read_text(encoding="utf-8").splitlines()
    assert size == dump.stat().st_size and len(lines) == 1200
    articles = parse_dump_lines(SourceSpec(str(dump), "jsonl", str(dump)), enumerate(lines, start=1))
    assert len({a.doc_id for a in articles}) == 1200  # every line parsed, ids unique
    lengths = [len(a.body) for a in articles]
    assert 250 <= min(lengths) and max(lengths) <= 650
    words = {w.strip(".").lower() for a in articles for w in a.body.split()}
    assert len(words) > 3000  # varied words, not one sentence repeated
    # deterministic: the same seed writes the same dump
    again = tmp_path / "again.jsonl"
    stream_memory.write_dump(again, 1200)
    assert again.read_bytes() == dump.read_bytes()
    assert json.loads(lines[0]).keys() == {"_id", "title", "text"}


class _Model:
    """Stands in for a GPU model: batches above ``fits`` raise CUDA's out-of-memory error."""

    def __init__(self, fits: int):
        self.fits, self.tried = fits, []

    def encode(self, texts, batch_size, **_):
        import torch

        self.tried.append(batch_size)
        if batch_size > self.fits:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")


@pytest.mark.parametrize(("fits", "expected"), [(64, 64), (700, 512), (10**6, 512)])
def test_the_gpu_batch_search_keeps_the_largest_power_of_two_that_fits(fits, expected):
    gpu_encode = _benchmark("gpu_encode")
    model = _Model(fits)
    texts = [f"paragraph {i} " * (i % 7 + 1) for i in range(1000)]
    assert gpu_encode.largest_batch(model, texts, "cpu", cap=8192) == expected
    # stops at the first failure, or below the corpus size (a bigger batch than 1000 texts is the same batch)
    assert model.tried[-1] in (expected, expected * 2)


@pytest.mark.parametrize(("rows", "rate"), [(10_000, 256), (50_000, 256), (200_000, 146), (1_000_000, 65),
                                            (20_000_000, 64)])
def test_the_ann_training_sample_is_lancedbs_default_until_it_is_capped_then_never_below_64(rows, rate):
    from tasks.store import ANN_SAMPLE_VECTORS, ann_config, ann_sample_rate

    partitions = round(rows**0.5)
    assert ann_sample_rate(partitions) == rate
    assert min(rows, rate * partitions) <= max(ANN_SAMPLE_VECTORS, 64 * partitions)
    assert ann_config("IVF_SQ", rows).sample_rate == rate
