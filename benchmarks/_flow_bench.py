"""Set-up shared by the benchmarks that time the index flow in child processes (``dask_index``,
``pipeline_busy``): models offline, Prefect quiet and configured as the CLI configures it, the repo
importable; and the helpers they share. Imported first, for its side effects, before Prefect loads."""

from __future__ import annotations

import itertools
import os
import resource
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from deployments.prefect_env import prefect_environment  # noqa: E402 - after the environment above

prefect_environment()


def write_subset(corpus: Path, docs: int, out: Path) -> Path:
    """The first ``docs`` records of a BEIR ``corpus.jsonl`` in ``out``."""
    with open(corpus, encoding="utf-8") as src, open(out, "w", encoding="utf-8") as dst:
        dst.writelines(itertools.islice(src, docs))
    return out


def peak_rss_mb() -> float:
    """This process's peak resident set size (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
