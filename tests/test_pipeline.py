"""The in-process pipeline: the next batch is read and split while the current one encodes, and the
table is the one a run of one batch after another writes (real flow, Prefect harness, MiniLM, LanceDB)."""

from __future__ import annotations

import json
from pathlib import Path

import lancedb
import numpy as np
import pytest


def _dump(path: Path, n: int) -> Path:
    lines = [{"id": f"d{i}", "title": f"Topic {i}",
              "text": "\n\n".join(f"Document {i} explains point {j} of topic {i} in a sentence long enough."
                                  for j in range(4))} for i in range(n)]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def _rows(db: str, collection: str) -> dict[str, dict]:
    t = lancedb.connect(db).open_table(collection).to_lance()
    cols = ["id", "doc_id", "title", "position", "text", "vector"]
    return {r["id"]: r for r in t.to_table(columns=cols).to_pylist()}


def _task_intervals(flow_run_id) -> dict[str, list[tuple]]:
    """(start, end) of the run's task runs, by task name (prepare, encode, write...)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    out: dict[str, list[tuple]] = {}
    for r in runs:
        out.setdefault(r.name.rsplit("-", 1)[0], []).append((r.start_time, r.end_time))
    return out


def _overlaps(a: list[tuple], b: list[tuple]) -> bool:
    return any(s1 < e2 and s2 < e1 for s1, e1 in a for s2, e2 in b)


def test_pipelined_run_overlaps_reading_with_encoding_and_writes_the_sequential_runs_table(
        prefect_harness, tmp_path):
    from flows.index_corpus import index_corpus

    dump = _dump(tmp_path / "dump.jsonl", 48)
    db = str(tmp_path / "db")
    states = {}
    for name, depth in (("sequential", 0), ("pipelined", 2)):
        state = index_corpus([str(dump)], collection=name, db_uri=db, batch_articles=6,
                             settings_overrides={"pipeline_depth": depth}, return_state=True)
        assert state.result()["paragraphs_encoded"] == 192
        states[name] = state
    seq, pipe = _rows(db, "sequential"), _rows(db, "pipelined")
    assert sorted(seq) == sorted(pipe)
    for key, row in seq.items():
        assert {k: v for k, v in row.items() if k != "vector"} == {k: v for k, v in pipe[key].items() if k != "vector"}
        assert np.allclose(row["vector"], pipe[key]["vector"], atol=1e-5)
    # Prepare shards of later batches ran while earlier batches encoded; one after another, never.
    pipelined = _task_intervals(states["pipelined"].state_details.flow_run_id)
    sequential = _task_intervals(states["sequential"].state_details.flow_run_id)
    assert len(pipelined["prepare"]) == len(pipelined["encode"]) == 8
    assert _overlaps(pipelined["prepare"], pipelined["encode"])
    assert not _overlaps(sequential["prepare"], sequential["encode"])
    # A rerun of the pipelined collection encodes nothing.
    again = index_corpus([str(dump)], collection="pipelined", db_uri=db, batch_articles=6)
    assert again["paragraphs_encoded"] == 0 and again["articles_unchanged"] == 48


def test_a_run_holds_no_written_batchs_paragraphs_or_vectors(prefect_harness, tmp_path):
    """Prefect keeps shard results in reference cycles until a full garbage collection: what the flow has
    written must be emptied, or a big dump's every paragraph and vector stays in memory to the end."""
    import gc

    from flows.index_corpus import index_corpus
    from tasks.stages import Encoded, PreparedBatch

    dump = _dump(tmp_path / "dump.jsonl", 24)
    gc.collect()
    gc.disable()  # keep the cycles, as a long run between Python's rare full collections does
    try:
        summary = index_corpus([str(dump)], collection="c", db_uri=str(tmp_path / "db"), batch_articles=6)
        kept = [o for o in gc.get_objects() if isinstance(o, PreparedBatch | Encoded)]
    finally:
        gc.enable()
    assert summary["paragraphs_encoded"] == 96
    assert len(kept) >= 4, "the shard results were freed at once: nothing to check"
    assert not [o for o in kept if isinstance(o, PreparedBatch) and (o.plan.new or o.split.paragraphs)]
    assert not [o for o in kept if isinstance(o, Encoded) and o.vectors.size]


@pytest.mark.parametrize("n", [0, 1, 7, 100, 255, 256, 490, 511, 512, 980, 2049])
@pytest.mark.parametrize("parts", [1, 2, 3, 4])
def test_encode_slices_tile_the_batch_near_equally_and_start_on_the_encoders_steps(n, parts):
    from tasks.encode import slice_bounds

    step = 256
    bounds = [slice_bounds(n, i, parts, step) for i in range(parts)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:])) and all(lo <= hi for lo, hi in bounds)
    # Every cut on a step: each slice makes the encoder batches one process makes, so the vectors are equal.
    assert all(lo % step == 0 or lo == hi == n for lo, hi in bounds)
    assert all(hi - lo <= n / parts + step for lo, hi in bounds)  # and no slice more than a step over its share


def test_a_batch_that_deletes_thousands_of_paragraphs_is_one_version_so_no_reader_sees_old_beside_new(tmp_path):
    """Deletions past 1,000 ids were committed in chunks after the merge: the versions between held a changed
    article's old paragraphs beside its new ones, and readers saw both."""
    import lancedb
    import numpy as np
    import pyarrow as pa

    from query.schema import IndexMetadata
    from tasks import store
    from tasks.records import Paragraph

    def paragraphs(doc: str, n: int, gen: int) -> list[Paragraph]:
        return [Paragraph(id=f"{doc}-{gen}-{i}", doc_id=doc, source="s", title="t", position=i, text=f"{doc} {gen} {i}",
                          encoded=f"{doc} {gen} {i}", content_hash=f"h{doc}-{gen}-{i}", origin="o") for i in range(n)]

    db = lancedb.connect(str(tmp_path / "db"))
    table = store.open_paragraph_table(db, "c", IndexMetadata(encoder="e", dim=4, normalized=True, encode_title=True))
    old = [p for d in range(3) for p in paragraphs(f"d{d}", 900, 0)]  # 2,700 rows
    store.apply_batch(table, store.BatchPlan(new=old), np.ones((len(old), 4), np.float32), 4)
    new = [p for d in range(3) for p in paragraphs(f"d{d}", 5, 1)]  # every article rewritten
    plan = store.plan_batch(new, store.existing_rows(table, "o", ["d0", "d1", "d2"]), ["d0", "d1", "d2"])
    assert len(plan.deleted_ids) == 2700 and len(plan.new) == 15
    before = table.version
    store.apply_batch(table, plan, np.ones((15, 4), np.float32), 4)
    assert table.version == before + 1 and table.count_rows() == 15
    assert pa.compute.min(table.to_arrow()["id"]).as_py().endswith("-1-0")  # no generation-0 row left
