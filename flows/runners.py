"""Where an index run's shards run: threads of the flow process, or a Dask cluster through prefect-dask.

One function, :func:`task_runner`, decides from the run's settings (``workers``, ``dask_address``,
``device``), so that the CLI, ``corpus_search.index()`` and a deployment's work pool (environment
variables) all get the same behaviour without choosing a runner themselves.

- ``dask_address`` set: the running cluster at that address (checked before the run starts).
- ``workers`` = N > 0: a ``LocalCluster`` of N worker processes, started for the run and stopped after
  it. Each worker's torch gets an equal share of this machine's cores. Each worker has two threads and
  one ``encoder`` resource: one thread encodes while the other reads and splits the next batch, as the
  in-process pipeline does (a cluster of your own gets the same with ``dask worker --nthreads 2
  --resources encoder=1``; without the resource its workers run shards as their threads allow).
- ``workers`` = 0 on a machine with k >= 2 CUDA devices (device auto or cuda): one worker per GPU, each
  seeing only its own device (``CUDA_VISIBLE_DEVICES``), so that k encoders run side by side.
- otherwise: ``None``, the shards run in threads of the flow process (pipelined, see ``pipeline_depth``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from query.errors import CorpusSearchError
from query.settings import Settings

#: Batches in flight per Dask worker: one encoding, one being read and split.
BATCHES_PER_WORKER = 2
#: The Dask resource an encode shard holds. A worker that declares one unit of it encodes one slice at a
#: time, and its other thread prepares (reads, splits) the next batch meanwhile.
ENCODER_RESOURCE = "encoder"
#: Threads of each worker the run starts: one encoding, one preparing.
WORKER_THREADS = 2
#: Batches in flight in one process: the next one is read and split while the current one encodes.
IN_PROCESS_DEPTH = 2
#: How long the scheduler of ``--dask-address`` may take to accept a connection before the run fails.
CONNECT_TIMEOUT_S = 5.0



def retry_on_io_error(task, task_run, state) -> bool:
    """A task's ``retry_condition_fn``: retry an I/O failure (``OSError``) only."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            exc = state.result(raise_on_failure=False)
        except Exception:  # noqa: BLE001 - unreadable: not known to be I/O
            return False
    return isinstance(exc, OSError)

class DaskUnavailableError(CorpusSearchError, ConnectionError):
    """The Dask scheduler named by ``--dask-address`` / ``CORPUS_SEARCH_DASK_ADDRESS`` cannot be reached."""


def check_dask_address(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Fail at once, with what to do, when ``address`` is no reachable Dask scheduler (tcp://host:port).

    Without this a run would wait for distributed's connect timeout (30 s) and end in a stack trace.
    """
    fix = ("Start a scheduler (`dask scheduler`, then `dask worker tcp://HOST:8786` on each machine) and give "
           "its address, or drop --dask-address (CORPUS_SEARCH_DASK_ADDRESS) to index in this process; "
           "--workers N starts a local cluster for the run")
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in ("tcp", "tls") or not parts.hostname or port is None:
        raise DaskUnavailableError(f"--dask-address {address!r} is not a Dask scheduler address like "
                                   f"tcp://127.0.0.1:8786. {fix}")
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise DaskUnavailableError(f"cannot reach the Dask scheduler at {address}: "
                                   f"{exc.strerror or exc}. {fix}") from exc
    # Something listens there; a Dask scheduler answers the comm handshake (an HTTP server, say, never does,
    # and the run would wait on it forever).
    import asyncio

    from distributed.comm import connect

    async def handshake() -> None:
        comm = await connect(f"{parts.scheme}://{parts.hostname}:{port}", timeout=timeout_s)
        await comm.close()

    try:
        asyncio.run(asyncio.wait_for(handshake(), timeout_s))
    except (OSError, TimeoutError) as exc:
        why = str(exc) or f"no Dask handshake within {timeout_s:.0f} s"
        raise DaskUnavailableError(f"{address} answers, but not as a Dask scheduler ({why}). {fix}") from None


def cuda_device_count() -> int:
    """CUDA devices this process sees (0 without torch or CUDA); asks without creating a CUDA context.

    Without an NVIDIA driver it does not even import torch (seconds): a run with nothing to encode stays light.
    """
    if not Path("/proc/driver/nvidia/gpus").is_dir():
        return 0
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def thread_env(threads: int) -> dict[str, str]:
    """Environment that gives a worker's torch (OpenMP, MKL, OpenBLAS) ``threads`` threads.

    Dask's nanny sets these to 1 by default, which would leave all but N cores idle.
    """
    return {name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


def gpu_worker_specs(gpus: int, workers: int = 0, cpus: int | None = None) -> dict[str, dict[str, Any]]:
    """Dask ``SpecCluster`` worker specs: one single-threaded worker per GPU (``workers`` = 0), or
    ``workers`` workers spread round-robin over ``gpus`` devices; each sees only its device.

    A pure function of the device count, so it is tested on machines without a GPU.
    """
    from distributed import Nanny

    if gpus < 1:
        raise ValueError(f"gpu_worker_specs needs at least one GPU, got {gpus}")
    n = workers or gpus
    threads = max(1, (cpus or os.cpu_count() or 1) // n)
    return {
        f"gpu-{i}": {"cls": Nanny, "options": {
            "nthreads": WORKER_THREADS, "resources": {ENCODER_RESOURCE: 1},
            "env": {"CUDA_VISIBLE_DEVICES": str(i % gpus), **thread_env(threads)},
        }}
        for i in range(n)
    }


def task_runner(settings: Settings):
    """The prefect-dask ``DaskTaskRunner`` for these settings, or None to run the shards in this process."""
    if not (settings.dask_address or settings.workers or _wants_gpu_cluster(settings)):
        return None
    from prefect_dask import DaskTaskRunner

    if settings.dask_address:
        check_dask_address(settings.dask_address)
        return DaskTaskRunner(address=settings.dask_address)
    gpus = cuda_device_count() if _uses_cuda(settings) else 0
    # No dashboard: it needs bokeh, and two runs on one machine would fight for its port.
    if gpus:
        from distributed import Scheduler, SpecCluster

        scheduler = {"cls": Scheduler, "options": {"dashboard_address": None}}
        return DaskTaskRunner(cluster_class=SpecCluster, cluster_kwargs={
            "scheduler": scheduler, "workers": gpu_worker_specs(gpus, settings.workers), "name": "corpus-search-gpus"})
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=local_cluster_kwargs(settings.workers))


def local_cluster_kwargs(workers: int) -> dict[str, Any]:
    """``LocalCluster`` arguments of a run's ``--workers N`` cluster (benchmarks start the same one)."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    return {"n_workers": workers, "threads_per_worker": WORKER_THREADS, "processes": True,
            "dashboard_address": None, "env": thread_env(threads), "resources": {ENCODER_RESOURCE: 1}}


def _uses_cuda(settings: Settings) -> bool:
    return settings.device in ("auto", "cuda")


def _wants_gpu_cluster(settings: Settings) -> bool:
    """One worker per GPU pays off only with two GPUs or more (one GPU: the in-process pipeline feeds it)."""
    return settings.workers == 0 and _uses_cuda(settings) and cuda_device_count() >= 2


@contextlib.contextmanager
def api_for_workers(runner, address: str | None = None) -> Iterator[None]:
    """Within this block, task runs sent to Dask workers report to this run's Prefect API.

    Without ``PREFECT_API_URL`` Prefect starts a temporary server in the flow's process; workers get the
    flow's settings with each task, and would each start a server of their own (seconds per worker, and
    their task runs recorded nowhere the run can be seen). So the temporary server's address is named.
    That address is this machine's loopback: a cluster at a scheduler ``address`` on another host gets a
    warning that its workers need a server they can reach.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if runner is None or PREFECT_API_URL.value():
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start()  # already running for this flow run: returns at once
    host = urlsplit(address if address and "://" in address else f"tcp://{address}").hostname if address else None
    if host and host not in ("localhost", "::1") and not host.startswith("127."):
        from prefect.exceptions import MissingContextError
        from prefect.logging import get_run_logger

        try:
            logger = get_run_logger()
        except MissingContextError:
            logger = logging.getLogger(__name__)
        logger.warning(
            "the Dask workers report to this run's temporary Prefect server at %s, on this machine's loopback: "
            "workers on other machines cannot reach it. Set PREFECT_API_URL to a Prefect server they can reach "
            "(`prefect server start --host 0.0.0.0`)", server.api_url)
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        yield


def declares_encoder(workers: dict[str, dict]) -> bool:
    """Whether every worker (``Client.scheduler_info()["workers"]``) declares the encoder resource. Only
    then may encode shards ask for it: a task that asks for a resource no worker has would wait forever."""
    return bool(workers) and all((w.get("resources") or {}).get(ENCODER_RESOURCE, 0) >= 1 for w in workers.values())


def pipeline_depth(settings: Settings, runner, workers: int = 0) -> int:
    """Batches in flight: ``pipeline_depth`` when set, else 2 in one process and 2 per Dask worker.

    On Dask at least 1 (0, "one batch after another in the flow process", would not use the cluster).
    """
    if runner is None:
        return IN_PROCESS_DEPTH if settings.pipeline_depth is None else settings.pipeline_depth
    if settings.pipeline_depth is not None:
        return max(1, settings.pipeline_depth)
    return BATCHES_PER_WORKER * max(1, workers)


class _Done:
    """A shard run at once in this process, with a future's ``result()`` (pipeline_depth 0)."""

    def __init__(self, fn, *args) -> None:
        try:
            self.value, self.error = fn(*args), None
        except Exception as exc:  # noqa: BLE001 - raised again by result(), where a future would raise it
            self.value, self.error = None, exc

    def result(self):
        if self.error is not None:
            raise self.error
        return self.value


class _Joined:
    """A batch's encode slices, run on several Dask workers, as one future-like (``join_encoded``)."""

    def __init__(self, futures: list) -> None:
        self.futures = futures

    def result(self):
        from tasks.stages import join_encoded

        return join_encoded([f.result() for f in self.futures])


class Shards:
    """Starts a batch's two shards, prepare (fetch/read/parse, split, plan) and encode, where the run's
    settings say: on the Dask ``runner``, in threads of this flow run (its own task runner), or at once in
    this thread when ``depth`` is 0. Returns future-likes; the flow writes their results in batch order.
    On Dask, a batch's encode runs as one slice per worker.
    """

    def __init__(self, settings: Settings, runner) -> None:
        from tasks import stages

        self.settings, self.runner = settings, runner
        info = runner.client.scheduler_info().get("workers", {}) if runner is not None else {}
        self.workers = len(info)
        self.encoder_resource = declares_encoder(info)
        self.depth = pipeline_depth(settings, runner, self.workers)
        self.remote = runner is not None
        self._prepare = stages.prepare_batch
        self._encode = stages.encode_batch
        # Reading local files is the one I/O of a prepare shard worth a second try (a busy network mount); only
        # an OSError is retried, never a deterministic failure (a splitter bug ran the whole shard twice).
        self._prepare_files = stages.prepare_batch.with_options(retries=1, retry_delay_seconds=1,
                                                                retry_condition_fn=retry_on_io_error)

    @property
    def where(self) -> str:
        """Where shards run, for the run's log."""
        if self.runner is None:
            return "shards in this process" + (" (pipelined)" if self.depth else " (one batch after another)")
        return f"shards on a Dask cluster of {self.workers} workers"

    def release(self, *futures) -> None:
        """Let the Dask cluster forget written shards' results: a distributed future keeps its result in a
        worker's memory while any reference to it lives, and Prefect's task-run objects keep references in
        reference cycles until a full garbage collection. (Threads' futures hold nothing outside this process.)
        """
        for joined in futures:
            for future in getattr(joined, "futures", [joined]):
                wrapped = getattr(future, "wrapped_future", None)
                if hasattr(wrapped, "release") and hasattr(wrapped, "key"):  # a distributed.Future
                    wrapped.release()

    def start(self, spec, units: list, skip_keys: frozenset[str] = frozenset()) -> tuple[Any, Any]:
        """(prepared, encoded) future-likes of one batch of ``spec``'s work ``units``."""
        from tasks.stages import BatchWork

        prepare = self._prepare_files if spec.kind in ("file", "directory") else self._prepare
        work = BatchWork(spec, units, skip_keys)
        if self.depth == 0 and self.runner is None:
            prepared = _Done(prepare, work, self.settings)
            return prepared, _Done(lambda: self._encode(prepared.result(), self.settings))
        if self.runner is None:
            prepared = prepare.submit(work, self.settings)
            return prepared, self._encode.submit(prepared, self.settings)
        import dask

        prepared = self.runner.submit(prepare, parameters={"work": work, "settings": self.settings})
        # Each batch's encode is cut into one slice per worker: with whole batches, the last batches of a run
        # kept one worker busy while the others idled (2 workers, 11 batches: encoding 88 % of the time).
        parts = max(1, self.workers)
        # dask.annotate sets Dask's (process-wide) config; only this flow thread submits shards.
        with dask.annotate(resources={ENCODER_RESOURCE: 1}) if self.encoder_resource else contextlib.nullcontext():
            encoded = [self.runner.submit(self._encode, parameters={
                "prepared": prepared, "settings": self.settings, "part": i, "parts": parts}) for i in range(parts)]
        return prepared, encoded[0] if parts == 1 else _Joined(encoded)
