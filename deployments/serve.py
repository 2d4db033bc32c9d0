"""Python route (a laptop): serve the deployments built from the collections config.

    python -m deployments.serve [--config deployments/collections.toml] [--collection NAME ...]
    corpus-search serve          # same, and starts a local Prefect server first if none is reachable

The serving process polls the Prefect API (``PREFECT_API_URL``) for scheduled and manual runs and
executes them in subprocesses of this environment. Also here: starting and stopping a local
Prefect server (``start_local_server``), used by ``corpus-search serve`` and the end-to-end test.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from deployments.prefect_env import prefect_environment

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def prepare_environment() -> None:
    """Before Prefect configures logging: route ``tasks.*`` logs (the writer-lock wait) into run logs."""
    prefect_environment()
    extra = [x for x in os.environ.get("PREFECT_LOGGING_EXTRA_LOGGERS", "").split(",") if x.strip()]
    if "tasks" not in extra:
        os.environ["PREFECT_LOGGING_EXTRA_LOGGERS"] = ",".join([*extra, "tasks"])


def api_healthy(api_url: str, timeout_s: float = 2.0) -> bool:
    """True when ``<api_url>/health`` answers 200."""
    try:
        with urllib.request.urlopen(api_url.rstrip("/") + "/health", timeout=timeout_s) as resp:  # noqa: S310
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class LocalServer:
    """A ``prefect server start`` subprocess started by us (stopped by PID, never by name)."""

    process: subprocess.Popen
    api_url: str
    log_path: Path | None = None

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")

    def stop(self, timeout_s: float = 15.0) -> None:
        stop_process(self.process, timeout_s)


def stop_process(process: subprocess.Popen, timeout_s: float = 15.0) -> None:
    """Stop a process we started, and its process group when it leads one: SIGTERM, then SIGKILL."""
    if process.poll() is not None:
        return
    try:
        pgid = os.getpgid(process.pid)
    except ProcessLookupError:
        return
    own_group = pgid == process.pid  # started with start_new_session=True: the group is ours alone

    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if own_group:
                os.killpg(pgid, sig)
            else:
                process.send_signal(sig)

    send(signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait(10)


def start_local_server(
    port: int = 4200, *, host: str = "127.0.0.1", env: dict[str, str] | None = None,
    log_path: Path | None = None, timeout_s: float = 120.0,
) -> LocalServer:
    """Start ``prefect server start`` on ``host:port`` and wait until its API is healthy.

    Whatever ends the wait early (it exits, it times out, Ctrl-C, a SIGTERM the caller turned into an
    exception) stops the server: in a session of its own, it would otherwise run on with no parent.
    """
    api_url = f"http://{host}:{port}/api"
    child_env = dict(os.environ if env is None else env)
    prefect_environment(child_env)
    child_env.pop("PREFECT_API_URL", None)  # the server must not try to talk to itself through a client URL
    # The UI asks the server where its API is; without these it assumes port 4200.
    child_env.update(PREFECT_SERVER_API_HOST=host, PREFECT_SERVER_API_PORT=str(port), PREFECT_UI_API_URL=api_url)
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115 - the child keeps its copy
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=child_env, start_new_session=True,
        )
    finally:
        if log_path:
            out.close()
    server = LocalServer(proc, api_url, log_path)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:] if log_path else ""
                raise RuntimeError(f"prefect server exited with code {proc.returncode} before becoming healthy\n{tail}")
            if api_healthy(api_url, timeout_s=1.0):
                return server
            time.sleep(0.5)
        raise RuntimeError(f"prefect server on {api_url} did not become healthy within {timeout_s:.0f}s")
    except BaseException:
        server.stop()
        raise


def serve(config_path: str | Path | None = None, *, collections: list[str] | None = None,
          limit: int | None = None) -> None:
    """Build the deployments from the config and serve them until interrupted (Ctrl-C)."""
    prepare_environment()
    from prefect import serve as prefect_serve

    from deployments.build import build_deployments
    from deployments.config import load_config

    cfg = load_config(config_path)
    deployments = build_deployments(cfg, only=collections)
    names = ", ".join(f"{d.flow_name}/{d.name}" for d in deployments)
    print(f"corpus-search: serving {len(deployments)} deployments from {cfg.path}: {names}", flush=True)
    prefect_serve(*deployments, limit=limit)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deployments.serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=None, help="collections config (default: deployments/collections.toml)")
    p.add_argument("--collection", action="append", default=None, help="serve only this collection (repeatable)")
    p.add_argument("--limit", type=int, default=None, help="at most this many concurrent runs")
    args = p.parse_args(argv)
    serve(args.config, collections=args.collection, limit=args.limit)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
