"""The one place that prepares Prefect's environment variables, before Prefect is imported.

It lives in ``deployments`` (the lowest layer that starts Prefect servers) so that the CLI, the
server launcher, benchmarks and tests all share it without a layer importing upwards. Standard
library only: importing it must not import Prefect.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

#: Defaults only: a user's own value always wins.
PREFECT_DEFAULTS = {
    # Telemetry on a local temporary server logs "database is locked" noise.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # A first run creates Prefect's database, which takes longer than the 20 s default on a small machine.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}


def prefect_environment(env: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Fill in :data:`PREFECT_DEFAULTS` in ``env`` (default: ``os.environ``) and create ``PREFECT_HOME``.

    Call it before Prefect is imported (Prefect reads its settings once). Returns ``env``.
    """
    env = os.environ if env is None else env
    for key, value in PREFECT_DEFAULTS.items():
        env.setdefault(key, value)
    # Prefect does not create a missing parent of PREFECT_HOME, and its temporary server then hangs.
    home = env.get("PREFECT_HOME")
    if home:
        os.makedirs(os.path.expanduser(home), exist_ok=True)
    return env
