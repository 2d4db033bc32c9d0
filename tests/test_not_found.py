"""When a page that answers 404 loses its rows (tasks.not_found), against hand-worked run histories."""

from datetime import UTC, datetime, timedelta

from tasks.not_found import judge_not_found, previous_streaks

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
DAY = 86400.0
A, B, C = "https://x.org/a", "https://x.org/b", "https://x.org/c"


def _judge(answered, previous, *, attempted=frozenset({A, B, C}), indexed=frozenset({A, B, C}), grace_s=DAY):
    return judge_not_found([("https://x.org", u, "HTTP 404 (not found)") for u in answered], previous,
                           attempted=set(attempted), indexed=set(indexed), grace_s=grace_s, now=NOW)


def test_a_first_404_starts_a_streak_and_keeps_the_rows_saying_from_when_they_go():
    verdict = _judge([A], {})
    assert verdict.due == [] and verdict.streaks == {A: NOW.isoformat()}
    [(url, message)] = verdict.waiting
    assert url == A and "since 2026-12-07 12:00 UTC" in message and "on a run from 2026-12-08 12:00 UTC on" in message
    assert "CORPUS_SEARCH_NOT_FOUND_GRACE_S=86400" in message and "corpus-search delete" in message


def test_a_404_that_has_lasted_the_grace_is_due_and_one_younger_still_waits():
    previous = {A: (NOW - timedelta(days=1)).isoformat(), B: (NOW - timedelta(hours=23)).isoformat()}
    verdict = _judge([A, B], previous)
    assert verdict.due == [("https://x.org", A)] and [u for u, _ in verdict.waiting] == [B]
    # Both keep their first 404: a guard may keep the due page this run, and its streak must not restart.
    assert verdict.streaks == previous


def test_a_page_fetched_again_without_a_404_ends_its_streak_and_one_not_fetched_carries_it_on():
    previous = {A: (NOW - timedelta(hours=2)).isoformat(), B: (NOW - timedelta(hours=3)).isoformat()}
    verdict = _judge([], previous, attempted={A})  # A came back; B was not fetched by this run
    assert verdict.streaks == {B: previous[B]} and not verdict.due and not verdict.waiting


def test_a_carried_streak_of_a_page_no_longer_indexed_or_with_an_unreadable_time_is_dropped():
    previous = {A: (NOW - timedelta(hours=2)).isoformat(), B: "yesterday", C: NOW.isoformat()}
    verdict = _judge([], previous, attempted=set(), indexed={B, C})
    assert verdict.streaks == {C: NOW.isoformat()}
    # An unreadable time restarts the streak rather than deleting at once.
    assert _judge([B], {B: "yesterday"}).streaks == {B: NOW.isoformat()}


def test_a_grace_of_zero_deletes_on_the_first_404():
    assert _judge([A], {}, grace_s=0).due == [("https://x.org", A)]


def test_the_streaks_come_from_the_last_index_run_of_the_log_and_older_records_have_none():
    runs = [{"kind": "index", "summary": {"not_found": {A: "t1"}}}, {"kind": "index", "summary": {"not_found": {B: "t2"}}},
            {"kind": "tag", "summary": None}, {"kind": "reranker", "summary": {"promoted": "x"}}]
    assert previous_streaks(runs) == {B: "t2"}
    assert previous_streaks([*runs, {"kind": "index", "summary": {"rows": 3}}]) == {}  # recorded before 404 streaks
    assert previous_streaks([]) == {}


def test_an_infinite_or_huge_grace_never_deletes_and_says_so_instead_of_overflowing():
    """A grace of 1e12 s or inf ("a very large value never") raised OverflowError inside the run's writer lock."""
    for grace in (float("inf"), 1e12):
        verdict = _judge([A], {A: (NOW - timedelta(days=3650)).isoformat()}, grace_s=grace)
        assert verdict.due == [] and "never deleted for it" in verdict.waiting[0][1]


def test_a_streak_that_began_in_the_future_or_before_2020_restarts_now():
    """A clock set wrong: a start in 2099 held the rows past any grace (even 0), one in 1970 deleted at once."""
    for wrong in ("2099-01-01T00:00:00+00:00", "1970-01-01T00:00:00+00:00"):
        verdict = _judge([A], {A: wrong}, grace_s=3600)
        assert verdict.due == [] and verdict.streaks == {A: NOW.isoformat()}
    assert _judge([A], {A: "2099-01-01T00:00:00+00:00"}, grace_s=0).due == [("https://x.org", A)]
