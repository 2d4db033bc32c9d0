"""When an indexed page that answers HTTP 404 loses its rows.

A 410 says "removed for good", and deletes at once. A 404 says only "not here now": a page moved without a
redirect, a typo in a deploy, a CMS having a bad minute. So a 404 page keeps its rows until it has answered 404
on every index run that fetched it for ``not_found_grace_s`` (a day by default), and is then deleted as a 410 page
is, under the same guards (the run's share of rows and each site's share of pages).

The memory is the run log: each index run records, in its summary, ``not_found``: {URL: when it first answered
404}. The next run reads the last index run's map, so the first 404 of a streak is found there. A run that did not
fetch a page (it indexed other sources) carries the page's entry on; a run that fetched it and got anything but a
404 back (the page, or an error that says nothing of it, such as a 503) ends the streak: the rows stay longer,
never shorter. A run that crashed records nothing, and the streak goes on from the run before it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

#: Graces from a hundred years on mean "never" (a date that far ahead cannot even be computed past year 9999).
_NEVER_S = 100 * 365 * 86400.0
#: No streak began before this: an earlier start is a clock that was wrong.
_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)


@dataclass
class NotFoundVerdict:
    """What one run does with its pages that answered 404."""

    #: (origin, URL) whose 404 has lasted the grace: deleted at the run's end, under its guards.
    due: list[tuple[str, str]] = field(default_factory=list)
    #: (URL, message): indexed pages still in their grace, reported as this run's failures (their rows stay).
    waiting: list[tuple[str, str]] = field(default_factory=list)
    #: What the run records for the next one: {URL: ISO time of its first 404}. The due ones too: a guard may
    #: keep them this run, and a deleted page's entry is dropped by the next run (no longer indexed).
    streaks: dict[str, str] = field(default_factory=dict)


def judge_not_found(answered: list[tuple[str, str, str]], previous: dict[str, str], *, attempted: set[str],
                    indexed: set[str], grace_s: float, now: datetime | None = None) -> NotFoundVerdict:
    """Decide for this run's 404 pages.

    ``answered``: (origin, URL, error) of indexed pages that answered 404 in this run; ``previous``: the last
    index run's ``not_found`` map; ``attempted``: the URLs this run fetched; ``indexed``: the doc ids indexed
    when the run started (an entry for a page deleted since is dropped); ``grace_s``: ``not_found_grace_s``.
    """
    now = now or datetime.now(UTC)
    verdict = NotFoundVerdict()
    never = not math.isfinite(grace_s) or grace_s >= _NEVER_S  # "a very large value": no date to say, no overflow
    for url, since in previous.items():  # pages this run did not fetch: their streak is not broken by it
        if url not in attempted and url in indexed and _when(since) is not None:
            verdict.streaks[url] = since
    for origin, url, error in answered:
        first = _when(previous.get(url, "")) or now
        # A clock set wrong where the streak began: a start in the future would hold the rows past any grace,
        # one from before this software existed would delete at the second 404. Either restarts it now.
        if first > now or first < _EPOCH:
            first = now
        verdict.streaks[url] = first.isoformat()
        if not never and (now - first).total_seconds() >= grace_s:
            verdict.due.append((origin, url))
            continue
        when = "never deleted for it" if never else \
            f"deleted if it still answers 404 on a run from {_stamp(first + timedelta(seconds=grace_s))} on"
        verdict.waiting.append((url, (
            f"{error} since {_stamp(first)}: its rows are kept, and {when} (CORPUS_SEARCH_NOT_FOUND_GRACE_S="
            f"{grace_s:g}); corpus-search delete removes them now")))
    return verdict


def previous_streaks(runs: list[dict]) -> dict[str, str]:
    """The ``not_found`` map of the last index run in ``runs`` (the run log, oldest first); {} if none."""
    for run in reversed(runs):
        if run.get("kind") == "index" and isinstance(run.get("summary"), dict):
            found = run["summary"].get("not_found")
            return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}
    return {}


def _when(text: str) -> datetime | None:
    try:
        at = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
