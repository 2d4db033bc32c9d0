"""Prefect's temporary server must not outlive the CLI process that started it.

Without a configured ``PREFECT_API_URL``, Prefect starts a temporary API server as a child process and
stops it at exit. A CLI killed with SIGKILL never reaches its exit handlers, so that server ran on,
orphaned. Here the CLI starts the same singleton server itself (``SubprocessASGIServer()`` is what
Prefect's client would start anyway) and pairs it with a tiny watchdog process that stops the server
once its parent is gone.
"""

from __future__ import annotations

import os
import subprocess
import sys

# Runs in its own small interpreter: polls for the parent's death (re-parenting), then stops the server.
_WATCHDOG = r"""
import os, signal, sys, time
parent, server = int(sys.argv[1]), int(sys.argv[2])
signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the terminal is the CLI's to handle
def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
while alive(server):
    if os.getppid() != parent:  # the CLI died without stopping its server
        os.kill(server, signal.SIGTERM)
        for _ in range(50):
            if not alive(server):
                break
            time.sleep(0.1)
        else:
            os.kill(server, signal.SIGKILL)
        break
    time.sleep(0.5)
"""


def guard_temporary_server() -> int | None:
    """Start Prefect's temporary server now, watched; returns its PID, or None when a server is configured."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        return None  # a real server (or the test harness) is configured, or Prefect will say what is missing
    from unittest import mock

    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the singleton Prefect's own client uses
    # In a session of its own: a terminal's Ctrl-C goes to its whole foreground process group, and a server
    # that took it too was gone before the CLI could record the run as Crashed (it retried for 85 s, then
    # ended in a traceback with the run left Running). Prefect stops it at exit; the watchdog if we die.
    with mock.patch.object(subprocess, "Popen", _WatchedServer):
        server.start()
    return server.server_process.pid if server.server_process is not None else None


class _OwnSession(subprocess.Popen):
    """A child process in a new session, out of reach of the signals sent to the CLI's process group."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("start_new_session", True)
        super().__init__(*args, **kwargs)


class _WatchedServer(_OwnSession):
    """The server's process, watched from the moment it exists: a CLI killed while the server starts
    (before ``start()`` returns and Prefect's exit handler owns it) must not leave it running."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _OwnSession(  # noqa: S603 - our own interpreter and script; its own session, so a group SIGTERM spares it
            [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(self.pid)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True,
        )
