"""Subcommands that need Prefect flows (eval, serve, deploy); registered here to keep cli.py small."""

from __future__ import annotations

import argparse


def register(sub, common) -> None:
    """Add the flow-backed subcommands to the ``corpus-search`` parser."""
    return None
