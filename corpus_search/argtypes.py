"""argparse types shared by the ``corpus-search`` commands: whole numbers that must be positive or not negative."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """argparse type of -k, --candidates, --batch-articles and serve's --limit: a whole number >= 1 (0 or -5
    would mean nothing sensible)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type of --offset: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return value
