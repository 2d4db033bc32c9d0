"""The index flow on a real Dask cluster (prefect-dask): same table as one process, models once per worker,
a killed worker's shard redone without duplicates, and the CLI's --workers / --dask-address.

One LocalCluster (2 worker processes of 2 threads and one ``encoder`` resource each, the cluster
``--workers 2`` starts) is shared by the module and reached by address, as ``--dask-address`` does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import lancedb
import numpy as np
import pytest

from tests.conftest import REPO

WORDS = ("glacier", "river", "forest", "desert", "harbour", "volcano", "meadow", "canyon", "island", "tundra")


def _dump(path: Path, n: int, *, dup: bool = False) -> Path:
    """A JSONL dump of ``n`` records of three paragraphs each (distinct texts); ``dup`` repeats record 1 at the end."""
    lines = []
    for i in range(n):
        w = WORDS[i % len(WORDS)]
        paras = [f"Record {i} tells of the {w} number {i}, paragraph {j}, which is long enough to keep."
                 for j in range(3)]
        lines.append({"id": f"r{i}", "title": f"The {w} {i}", "text": "\n\n".join(paras)})
    if dup:
        lines.append({**lines[1], "text": lines[1]["text"] + "\n\nA later copy with another paragraph at its end."})
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def _table(db_uri: str, collection: str = "test") -> dict[str, dict]:
    t = lancedb.connect(db_uri).open_table(collection)
    cols = ["id", "doc_id", "origin", "source", "title", "position", "text", "vector"]
    return {r["id"]: r for r in t.to_lance().to_table(columns=cols).to_pylist()}


def assert_same_table(a: dict[str, dict], b: dict[str, dict]) -> None:
    """Same rows; the same vectors to the precision they were encoded in.

    The workers encode the very batches one process does (``encode_step``), but each on 1 of the 2 cores'
    threads where one process uses both. In fp32 that changes nothing (bit-identical here). In bf16 on a
    CPU with AMX-BF16, torch's kernels split the work by thread count and round differently: the same 18
    texts, in one batch, differ by up to 6e-4 per component (cosine 0.999995) between 1 and 2 threads
    (benchmarks/RESULTS.md, "Stop 31"). The bound there is the precision rule's own
    (``MIN_AGREEMENT_COSINE``, what reduced precision must keep against fp32).
    """
    from query.bi_encoder import MIN_AGREEMENT_COSINE
    from query.devices import resolve_device, resolve_precision
    from query.settings import get_settings

    s = get_settings()  # the precision rule, not a model load: a test counts the process's loads
    exact = resolve_precision(s.precision, resolve_device(s.device)) == "fp32"
    assert sorted(a) == sorted(b)
    for key, row in a.items():
        other = b[key]
        assert {k: v for k, v in row.items() if k != "vector"} == {k: v for k, v in other.items() if k != "vector"}
        u, v = np.asarray(row["vector"]), np.asarray(other["vector"])
        if exact:
            assert np.allclose(u, v, atol=1e-5)
        else:
            assert float(u @ v) >= MIN_AGREEMENT_COSINE, (key, float(u @ v))


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster this module owns (so that tests can kill its workers), as a running scheduler address."""
    from distributed import Client, LocalCluster

    from flows.runners import local_cluster_kwargs

    with LocalCluster(**local_cluster_kwargs(2)) as lc, Client(lc) as client:
        yield lc.scheduler_address, client


@pytest.fixture(scope="module")
def reference(prefect_harness, tmp_path_factory):
    """A dump and the table an in-process run (the default runner) makes of it."""
    from flows.index_corpus import index_corpus

    root = tmp_path_factory.mktemp("dask-ref")
    dump = _dump(root / "dump.jsonl", 40, dup=True)
    db = str(root / "db")
    summary = index_corpus([str(dump)], collection="test", db_uri=db, batch_articles=6)
    assert summary["paragraphs_encoded"] == 120
    return dump, _table(db), summary


def _loads(client) -> dict[str, int]:
    """Bi-encoder loads on each worker (query.models caches one per process)."""
    def misses() -> int:
        from query.models import load_bi_encoder

        return load_bi_encoder.cache_info().misses

    return client.run(misses)


def test_a_two_worker_run_writes_the_same_table_as_one_process_loading_the_model_once_per_worker(
        reference, cluster, tmp_path):
    from flows.index_corpus import index_corpus
    from query.models import load_bi_encoder

    address, client = cluster
    dump, expected, ref_summary = reference
    before = load_bi_encoder.cache_info().misses
    workers = set(client.scheduler_info()["workers"])
    db = str(tmp_path / "db")
    first = index_corpus([str(dump)], collection="test", db_uri=db, batch_articles=6,
                         settings_overrides={"dask_address": address})
    assert_same_table(_table(db), expected)
    # The dump's repeated id (in a later batch than its first copy) is reported as in one process.
    assert first["failures"] == ref_summary["failures"]
    assert any("duplicate doc_id" in f["error"] for f in first["failures"])
    again = index_corpus([str(dump)], collection="test", db_uri=db, batch_articles=6,
                         settings_overrides={"dask_address": address})
    assert again["paragraphs_encoded"] == 0 and again["articles_unchanged"] == 40
    assert_same_table(_table(db), expected)
    loads = _loads(client)
    assert all(n <= 1 for n in loads.values()), loads  # no process loaded the model twice
    if set(loads) == workers:  # (a worker that crashed, as one did once in CI with SIGSEGV, comes back fresh)
        assert sorted(loads.values()) == [1, 1], loads  # both workers worked, each loaded the model once
    assert load_bi_encoder.cache_info().misses == before  # the writer never needed the model


def test_a_worker_killed_mid_run_has_its_shard_redone_with_no_duplicate_rows(reference, cluster, tmp_path):
    from flows.index_corpus import index_corpus

    address, client = cluster
    dump, expected, ref_summary = reference
    db = str(tmp_path / "db")
    pids = client.run(os.getpid)
    result: dict = {}
    run = threading.Thread(target=lambda: result.update(index_corpus(
        [str(dump)], collection="test", db_uri=db, batch_articles=4, settings_overrides={"dask_address": address})))
    run.start()
    victim = None
    deadline = time.monotonic() + 60
    while victim is None and time.monotonic() < deadline and run.is_alive():
        busy = [w for w, keys in client.processing().items() if keys]
        if busy:
            victim = busy[0]
        time.sleep(0.05)
    assert victim is not None, "no worker ever ran a shard"
    os.kill(pids[victim], signal.SIGKILL)
    run.join(timeout=120)
    assert not run.is_alive()
    assert result["failures"] == ref_summary["failures"]  # no batch failed: only the dump's repeated id
    rows = _table(db)
    ids = [r["id"] for r in lancedb.connect(db).open_table("test").to_lance().to_table(columns=["id"]).to_pylist()]
    assert len(ids) == len(set(ids)), "duplicate rows"
    assert_same_table(rows, expected)


def test_cli_dask_address_runs_the_shards_on_that_cluster(prefect_harness, cluster, tmp_path):
    from prefect.settings import PREFECT_API_URL

    address, client = cluster
    # The killed-worker test leaves the nanny restarting a worker; on a busy machine that took longer than
    # that test plus the next (CI beside a training run: the run saw 1 worker). The claim needs both.
    client.wait_for_workers(2, timeout=120)
    dump = _dump(tmp_path / "small.jsonl", 6)
    # The harness's server, so that the CLI process does not start a temporary one (seconds on a busy box).
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_LOGGING_LEVEL": "INFO"}
    out = subprocess.run([sys.executable, "-m", "corpus_search.cli", "index", str(dump), "--db", str(tmp_path / "db"),
                          "--collection", "cli", "--json", "--dask-address", address, "--batch-articles", "2"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout)["paragraphs_encoded"] == 18
    assert "shards on a Dask cluster of 2 workers" in out.stderr + out.stdout


def test_workers_setting_starts_a_local_cluster_whose_workers_encode_one_slice_while_preparing_the_next():
    from prefect_dask import DaskTaskRunner

    from flows.runners import pipeline_depth, task_runner
    from query.settings import Settings

    runner = task_runner(Settings(workers=3, device="cpu"))  # nothing starts before the flow enters it
    assert isinstance(runner, DaskTaskRunner)
    assert runner.cluster_class == "distributed.LocalCluster"
    kw = runner.cluster_kwargs
    assert (kw["n_workers"], kw["threads_per_worker"], kw["processes"]) == (3, 2, True)
    assert kw["resources"] == {"encoder": 1}
    assert kw["env"]["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 3))
    assert pipeline_depth(Settings(workers=3), runner, workers=3) == 6
    assert task_runner(Settings(device="cpu")) is None  # in process
    assert pipeline_depth(Settings(), None) == 2 and pipeline_depth(Settings(pipeline_depth=0), None) == 0


def test_cli_workers_flag_becomes_the_runs_setting():
    from corpus_search.cli import build_parser, index_overrides

    args = build_parser().parse_args(["index", "x.jsonl", "--workers", "3"])
    assert index_overrides(args) == {"workers": 3, "dask_address": None}
    args = build_parser().parse_args(["index", "x.jsonl", "--dask-address", "tcp://10.0.0.5:8786"])
    assert index_overrides(args) == {"dask_address": "tcp://10.0.0.5:8786"}


@pytest.fixture
def http_listener():
    """A port that accepts connections but speaks HTTP, not Dask's protocol."""
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"tcp://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("how", ["flag", "environment"])
@pytest.mark.parametrize("address", ["tcp://127.0.0.1:1", "not an address", "http listener"])
def test_cli_unreachable_dask_address_is_a_one_line_error_exit_2(tmp_path, address, how, http_listener):
    address = http_listener if address == "http listener" else address  # answers, but never as Dask: no hang
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "corpus_search.cli", "index", str(tmp_path), "--db", str(tmp_path / "db")]
    if how == "flag":
        argv += ["--dask-address", address]
    else:
        env["CORPUS_SEARCH_DASK_ADDRESS"] = address
    out = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.startswith("corpus-search: error: ") and "Traceback" not in out.stderr
    assert "Dask scheduler" in out.stderr and "--workers N" in out.stderr


def test_one_worker_per_gpu_each_seeing_only_its_device():
    from distributed import Nanny

    from flows.runners import gpu_worker_specs

    specs = gpu_worker_specs(4, cpus=16)
    assert sorted(specs) == ["gpu-0", "gpu-1", "gpu-2", "gpu-3"]
    assert [s["options"]["env"]["CUDA_VISIBLE_DEVICES"] for s in specs.values()] == ["0", "1", "2", "3"]
    assert all(s["cls"] is Nanny and s["options"]["nthreads"] == 2 for s in specs.values())
    assert all(s["options"]["resources"] == {"encoder": 1} for s in specs.values())
    assert specs["gpu-0"]["options"]["env"]["OMP_NUM_THREADS"] == "4"
    # More workers than GPUs: spread round-robin.
    assert [s["options"]["env"]["CUDA_VISIBLE_DEVICES"] for s in gpu_worker_specs(2, workers=4).values()] == \
        ["0", "1", "0", "1"]
    with pytest.raises(ValueError):
        gpu_worker_specs(0)


def test_encode_shards_ask_for_the_encoder_resource_only_where_every_worker_declares_it(cluster):
    from flows.runners import declares_encoder

    _, client = cluster
    assert declares_encoder(client.scheduler_info()["workers"])  # the module's cluster, as --workers starts it
    # A cluster of the user's own without the resource (or with it on some workers only): shards must not
    # ask for it, or they would wait for ever.
    assert not declares_encoder({"tcp://a": {"resources": {}}, "tcp://b": {"resources": {"encoder": 1}}})
    assert not declares_encoder({})


PROBE = """
import ctypes, json
from tasks.heap import keep_large_blocks

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p

def mmapped_after_1mib_malloc():
    before = libc.mallinfo2().hblks
    block = libc.malloc(1 << 20)
    mapped = libc.mallinfo2().hblks - before
    libc.free(ctypes.c_void_p(block))
    return mapped

print(json.dumps([mmapped_after_1mib_malloc(), keep_large_blocks(), mmapped_after_1mib_malloc()]))
"""


@pytest.mark.parametrize("env, changed", [({"MALLOC_TRIM_THRESHOLD_": "65536"}, True),  # as Dask's nanny sets
                                          ({"MALLOC_TRIM_THRESHOLD_": "65536", "MALLOC_MMAP_THRESHOLD_": "131072"}, False),
                                          ({}, False)])
def test_a_worker_whose_trim_threshold_is_set_serves_tensor_sized_blocks_from_the_heap_again(env, changed):
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=60,
                         env={**base, "PYTHONPATH": str(REPO), **env})
    if "mallinfo2" in out.stderr:
        pytest.skip("not glibc >= 2.33")
    assert out.returncode == 0, out.stderr
    before, did, after = json.loads(out.stdout)
    assert did is changed
    if env:  # a set threshold fixes glibc's mmap threshold: a 1 MiB block is its own mmap ...
        assert before == 1
        assert after == (0 if changed else 1)  # ... until the call puts it back in the heap; a user's own stays


def test_workers_of_a_scheduler_on_another_host_are_warned_that_a_temporary_server_is_out_of_their_reach(caplog):
    """Without PREFECT_API_URL the workers are given this machine's loopback address of the run's temporary
    server: workers on another host cannot reach it."""
    import logging

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.runners import api_for_workers

    with temporary_settings(updates={PREFECT_API_URL: None}), caplog.at_level(logging.WARNING):
        with api_for_workers(object(), "tcp://127.0.0.1:8786"):
            pass
        assert "cannot reach it" not in caplog.text  # a scheduler on this machine: its workers can
        with api_for_workers(object(), "tcp://10.1.2.3:8786"):
            pass
    assert "workers on other machines cannot reach it. Set PREFECT_API_URL" in caplog.text
