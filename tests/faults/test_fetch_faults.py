"""Fault injection on reading sources: each bad URL, file or dump line is that article's failure.

A misbehaving real HTTP server on 127.0.0.1 (``Site``), real files and real dumps drive
``fetch_urls``, ``read_local_file``, ``list_directory`` and ``parse_dump_lines`` (no model), and
a few cases go through the real ``index-corpus`` flow. Every wait is bounded by a small deadline.
"""

from __future__ import annotations

import gzip
import logging
import os
import socket
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest

from flows.summary import NothingIndexedError

from tasks.fetch import HttpOptions, SourceSpec, classify_source, fetch_url, fetch_urls, list_directory, parse_dump_lines, read_local_file
from tasks.http_fetch import parse_retry_after
from tasks.http_transport import GuardedBackend, guarded_transport
from tasks.netguard import FetchPolicy, Refused
from tasks.records import Article, ArticleState, FetchFailure, NotModified, article_key
from tasks.urls import page_stamp, url_origin
from tests.conftest import Route, html_page, table_rows

#: The test server is on 127.0.0.1, so tests allow private addresses explicitly; the default refuses them.
OPTS = HttpOptions(allow_private=True, retries=0, timeout_s=5, deadline_s=10, backoff_s=0.05, concurrency=4)
PAGE = html_page("Paris", ["Paris is the capital and most populous city of France, on the Seine river."])
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def fetch(url: str, opts: HttpOptions = OPTS, states: dict | None = None):
    [outcome] = fetch_urls([url], states or {}, opts)
    return outcome


def failed(outcome, *fragments: str) -> bool:
    return isinstance(outcome, FetchFailure) and all(f in outcome.error for f in fragments)


def redirect(site, path: str, location: str, status: int = 302) -> str:
    return site.page(path, b"", status=status, etag=False, headers={"Location": location})


# --------------------------------------------------------------------------- redirects and bad URLs


def test_a_redirect_loop_is_the_urls_failure_and_is_not_retried(site):
    url = redirect(site, "/loop", "/loop")
    out = fetch(url, replace(OPTS, retries=2))
    assert failed(out, "too many redirects")
    assert site.hits["/loop"] == 6  # the first request and 5 redirects, once: no retry


@pytest.mark.parametrize("location", ["javascript:alert(1)", "file:///etc/passwd", "ftp://example.org/x"])
def test_a_redirect_to_another_scheme_is_refused_and_not_retried(site, location):
    url = redirect(site, "/away", location)
    out = fetch(url, replace(OPTS, retries=2))
    assert failed(out, "only http:// and https://")
    assert site.hits["/away"] == 1


def test_a_relative_redirect_is_followed_and_stored_under_the_original_url(site):
    site.page("/new/paris.html", PAGE)
    url = redirect(site, "/old/paris.html", "../new/paris.html", status=301)
    out = fetch(url)
    assert isinstance(out, Article) and out.doc_id == url and "Seine" in out.body
    assert site.hits["/new/paris.html"] == 1


def test_a_redirect_without_location_and_a_300_are_failures(site):
    a = site.page("/noloc", b"", status=302, etag=False)
    b = site.page("/choices", b"<p>pick one</p>", status=300)
    assert [failed(o, "HTTP 30") for o in fetch_urls([a, b], {}, OPTS)] == [True, True]


@pytest.mark.parametrize(
    ("suffix", "why"),
    [("/a\x00b", "control characters"), ("/a\nb", "control characters"), ("/" + "x" * 70_000, "longer than")],
)
def test_a_url_with_control_characters_or_over_64kb_is_refused_before_any_request(site, suffix, why):
    out = fetch(site.base + suffix)
    assert failed(out, why)
    assert site.hits == {}


def test_an_unparseable_url_is_a_failure_not_an_exception():
    outs = fetch_urls(["http://[::1", "http://example.org:99999/", "not a url"], {}, OPTS)
    assert all(isinstance(o, FetchFailure) for o in outs)
    assert [o.doc_id for o in outs] == ["http://[::1", "http://example.org:99999/", "not a url"]


@pytest.mark.parametrize("spec", ["http://example.org:99999/", "http://[::1/"])
def test_classifying_an_unparseable_url_source_names_it(spec):
    with pytest.raises(ValueError, match=r"invalid URL .*check the host and port"):
        classify_source(spec)


def test_any_unexpected_error_of_one_url_is_its_failure(site):
    def broken_resolver(*args, **kw):
        raise RuntimeError("resolver exploded")

    with httpx.Client() as client:
        out = fetch_url(client, site.page("/p", PAGE), None, HttpOptions(), resolve=broken_resolver)
    assert failed(out, "RuntimeError", "resolver exploded")


def test_a_broken_gzip_body_is_a_failure(site):
    url = site.page("/gz", b"\x1f\x8bnot really gzip", headers={"Content-Encoding": "gzip"})
    assert failed(fetch(url), "decode")


LONG = html_page("Rail", [f"Paragraph {i}: the railway reached the valley town in the spring of that year, "
                           f"and freight trains carried timber and ore along the river {i}." for i in range(40)]).encode()


def _deflate(data: bytes, raw: bool) -> bytes:
    import zlib

    c = zlib.compressobj(wbits=-zlib.MAX_WBITS if raw else zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
def test_a_compressed_body_cut_short_is_a_failure_not_a_shorter_page(site, encoding):
    """A server that dies mid-response sends a valid prefix of the stream: it was indexed as the whole page."""
    whole = gzip.compress(LONG) if encoding == "gzip" else _deflate(LONG, raw=encoding == "raw-deflate")
    name = "deflate" if "deflate" in encoding else "gzip"
    full = site.page("/full", whole, headers={"Content-Encoding": name})
    assert isinstance(out := fetch(full), Article) and "river 39" in out.body
    cut = site.page("/cut", whole[: len(whole) * 7 // 10], headers={"Content-Encoding": name})
    assert failed(fetch(cut), f"{name} body ends before its compressed stream does", "indexed rows are kept")


def test_a_gzip_body_of_several_members_is_read_whole(site):
    half = len(LONG) // 2
    url = site.page("/two", gzip.compress(LONG[:half]) + gzip.compress(LONG[half:]), headers={"Content-Encoding": "gzip"})
    out = fetch(url)
    assert isinstance(out, Article) and "river 0" in out.body and "river 39" in out.body


def test_a_next_gzip_member_is_read_whole_wherever_the_transfer_cuts_it():
    from tasks.http_fetch import _Inflater

    half = len(LONG) // 2
    first, second = gzip.compress(LONG[:half]), gzip.compress(LONG[half:])
    body = first + second
    for cut in (len(first) - 1, len(first), len(first) + 1, len(first) + 2):  # +1: inside its magic number
        inflater = _Inflater("gzip")
        assert inflater.feed(body[:cut], 10**7) + inflater.feed(body[cut:], 10**7) + inflater.finish() == LONG, cut


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_bytes_after_a_whole_compressed_body_are_ignored_as_browsers_do(site, encoding):
    whole = gzip.compress(LONG) if encoding == "gzip" else _deflate(LONG, raw=False)
    for junk in (b"\x00" * 8, b"JUNKJUNK"):
        out = fetch(site.page("/junk", whole + junk, headers={"Content-Encoding": encoding}))
        assert isinstance(out, Article) and "river 39" in out.body


def test_a_small_gzip_body_that_expands_past_the_size_limit_is_refused(site):
    url = site.page("/bomb", gzip.compress(b"<p>" + b"a" * 5_000_000 + b"</p>"), headers={"Content-Encoding": "gzip"})
    assert failed(fetch(url, replace(OPTS, max_bytes=100_000)), "exceeds the limit of 100000")


@pytest.mark.parametrize("status, says", [(206, "HTTP 206 (partial content)"), (202, "HTTP 202")])
def test_a_2xx_that_is_not_the_page_is_a_failure(site, status, says):
    url = site.page("/part", PAGE, status=status, headers={"Content-Range": "bytes 0-99/560"} if status == 206 else {})
    assert failed(fetch(url), says)


def test_a_repeated_content_type_header_is_still_the_page(site):
    # The server sends its Content-Type, and the route the same one again: "text/html, text/html" once joined.
    url = site.page("/twice", PAGE, content_type="text/html", headers={"Content-Type": "text/html"})
    assert isinstance(fetch(url), Article)


def test_a_pages_validators_are_not_sent_to_the_page_it_now_redirects_to(site):
    """Another resource answering 304 to /old's ETag kept /old's text for good, though /old had moved."""
    target = site.page("/new", html_page("Volcanoes", ["Volcanoes of Hawaii erupt basaltic lava from hot spots."]))
    etag = '"' + __import__("hashlib").sha1(site.routes["/new"].body).hexdigest() + '"'  # the target's own ETag
    old = redirect(site, "/old", target, status=301)
    state = ArticleState(article_key(url_origin(old), old), old, url_origin(old), "h", etag, None)
    out = fetch(old, states={state.key: state})
    assert isinstance(out, Article) and "Hawaii" in out.body and site.not_modified.get("/new", 0) == 0
    gone = site.page("/gone", b"", status=404, etag=False)
    assert failed(fetch(redirect(site, "/moved", gone)), "HTTP 404 from", "/gone, where", "/moved redirects")


def test_validators_go_to_the_redirect_target_that_gave_them_and_to_no_other(site):
    target = site.page("/new", html_page("Volcanoes", ["Volcanoes of Hawaii erupt basaltic lava from hot spots."]))
    etag = '"' + __import__("hashlib").sha1(site.routes["/new"].body).hexdigest() + '"'
    old = redirect(site, "/old", target, status=301)
    first = fetch(old)
    assert isinstance(first, Article) and first.final_url == target and first.etag == etag

    def state(answered_by: str | None) -> dict:
        s = ArticleState(article_key(url_origin(old), old), old, url_origin(old), "h", etag, None,
                         file_stamp=page_stamp("settings", answered_by))
        return {s.key: s}

    assert isinstance(fetch(old, states=state(target)), NotModified) and site.not_modified["/new"] == 1
    # The stamp names another target (the redirect moved since): no validators, the page is read whole.
    assert isinstance(fetch(old, states=state(site.base + "/elsewhere")), Article) and site.not_modified["/new"] == 1


def test_one_bad_url_does_not_stop_the_others_and_order_is_kept(site):
    good = site.page("/good", PAGE)
    urls = [redirect(site, "/loop", "/loop"), good, "http://[::1", site.base + "/x\x00", good + "?again"]
    site.routes["/good?again"] = site.routes["/good"]
    outs = fetch_urls(urls, {}, OPTS)
    assert [type(o).__name__ for o in outs] == ["FetchFailure", "Article", "FetchFailure", "FetchFailure", "Article"]
    assert [o.doc_id for o in outs] == urls


# --------------------------------------------------------------------------- SSRF


def test_the_default_refuses_the_loopback_server_without_contacting_it(site):
    out = fetch(site.page("/p", PAGE), HttpOptions(retries=2))
    assert failed(out, "refused: 127.0.0.1 is a loopback address; "
                       "set CORPUS_SEARCH_FETCH_ALLOW_PRIVATE=true to fetch private addresses")
    assert site.hits == {}


def test_a_host_name_resolving_to_loopback_is_refused(site):
    site.page("/p", PAGE)
    port = site.server.server_address[1]
    out = fetch(f"http://localhost:{port}/p", HttpOptions(retries=0))
    assert failed(out, "refused: localhost (", "is a loopback address")
    assert site.hits == {}


def test_every_redirect_hop_is_checked_against_the_host_lists(site):
    port = site.server.server_address[1]
    site.page("/secret", "internal admin page")
    url = redirect(site, "/bounce", f"http://localhost:{port}/secret")
    out = fetch(url, replace(OPTS, denied_hosts=("localhost",)))
    assert failed(out, "refused: localhost is a denied host")
    assert site.hits == {"/bounce": 1}  # the private hop was never requested


def test_only_allowed_hosts_are_fetched(site):
    out = fetch(site.page("/p", PAGE), replace(OPTS, allowed_hosts=("example.org",)))
    assert failed(out, "127.0.0.1 is not an allowed host")
    assert site.hits == {}


def test_the_connection_itself_is_refused_for_private_addresses(site):
    # The second line of defence (DNS rebinding): the socket is opened only to checked addresses.
    with pytest.raises(Refused, match="loopback"):
        GuardedBackend(FetchPolicy()).connect_tcp("localhost", site.server.server_address[1], timeout=1)


def test_dns_rebinding_between_check_and_connect_is_refused(site):
    # The URL check is told "localhost" is public; the real resolver at connect time says loopback.
    site.page("/p", PAGE)
    port = site.server.server_address[1]

    def public_once(host, port, type=0):  # noqa: A002 - getaddrinfo's keyword
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))]

    with httpx.Client(transport=guarded_transport(FetchPolicy(), httpx.Limits())) as client:
        out = fetch_url(client, f"http://localhost:{port}/p", None, HttpOptions(retries=1), resolve=public_once)
    assert failed(out, "refused: localhost (", "is a loopback address")
    assert site.hits == {}


# --------------------------------------------------------------------------- retries, Retry-After, deadline


def test_a_dns_lookup_that_never_answers_ends_at_the_fetch_deadline(monkeypatch):
    """getaddrinfo has no timeout: a resolver that did not answer held the fetch for as long as it hung."""
    import threading
    import time

    answer = threading.Event()

    def hanging(*args, **kwargs):  # a blackholed DNS server
        answer.wait(30)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    started = time.monotonic()
    try:
        out = fetch("http://news.example.org/a", replace(OPTS, deadline_s=1.0, retries=3))
    finally:
        answer.set()  # let the lookup's thread go
    assert time.monotonic() - started < 5
    assert failed(out, "news.example.org") and "deadline" in out.error, out


def test_lookups_that_hang_do_not_starve_the_fetches_after_them(monkeypatch, site):
    """Hung lookups filled a shared pool of 16 threads, and then every fetch failed, IP addresses included."""
    import threading

    answer, real = threading.Event(), socket.getaddrinfo

    def slow_for_some(host, *args, **kwargs):
        if str(host).endswith(".slow.test"):
            answer.wait(30)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow_for_some)
    try:
        hung = fetch_urls([f"http://h{i}.slow.test/x" for i in range(20)], {}, replace(OPTS, deadline_s=0.5, concurrency=20))
        assert all(failed(o, "did not answer within the fetch deadline") for o in hung)
        port = site.server.server_address[1]
        ok = fetch_urls([site.page("/p", PAGE), f"http://localhost:{port}/p"], {}, OPTS)
        assert not any(isinstance(o, FetchFailure) for o in ok), ok
    finally:
        answer.set()


@pytest.mark.parametrize(("status", "says"), [(410, "HTTP 410 (gone)"), (404, "HTTP 404 (not found)")])
def test_a_410_or_404_is_the_pages_removal_and_is_not_retried(site, status, says):
    from tasks.records import Removed

    out = fetch(site.page("/gone", b"removed", status=status), replace(OPTS, retries=2))
    assert isinstance(out, Removed) and says in out.error and out.status == status and site.hits == {"/gone": 1}
    # Only the page's own word: a redirect that ends in a 410 elsewhere, or a 410 with Retry-After, keeps its rows.
    site.page("/elsewhere-gone", b"removed", status=status)
    moved = fetch(redirect(site, "/moved", "/elsewhere-gone", status=307))
    assert failed(moved, f"HTTP {status} from", "any rows indexed before are kept"), moved
    later = fetch(site.page("/later", b"removed", status=status, headers={"Retry-After": "3600"}))
    assert failed(later, f"HTTP {status} with Retry-After", "kept"), later


def test_5xx_is_retried_with_a_logged_backoff_and_404_is_not(site, caplog):
    err = site.page("/err", b"oops", status=500)
    gone = site.page("/gone", b"no", status=404)
    with caplog.at_level(logging.WARNING, logger="tasks.http_fetch"):
        outs = fetch_urls([err, gone], {}, replace(OPTS, retries=2))
    assert failed(outs[0], "HTTP 500", "after 3 attempts") and "HTTP 404" in outs[1].error
    assert site.hits == {"/err": 3, "/gone": 1}
    assert sum("retrying" in r.message and "/err" in r.message for r in caplog.records) == 2


def test_a_transport_error_is_retried():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = fetch(f"http://127.0.0.1:{port}/", replace(OPTS, retries=1))
    assert failed(out, "ConnectError", "after 2 attempts")


def test_retry_after_seconds_is_honoured_on_429(site):
    url = site.page("/busy", b"slow down", status=429, headers={"Retry-After": "1"})
    site.routes["/busy"].then = Route(body=PAGE.encode())
    started = time.monotonic()
    out = fetch(url, replace(OPTS, retries=1))
    assert isinstance(out, Article) and time.monotonic() - started >= 0.95
    assert site.hits["/busy"] == 2


def test_retry_after_as_an_http_date_is_read():
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after(format_datetime(now + timedelta(seconds=7), usegmt=True), now=now) == 7
    assert parse_retry_after(format_datetime(now - timedelta(hours=1), usegmt=True), now=now) == 0
    assert parse_retry_after("120") == 120 and parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_retry_after_over_the_cap_fails_at_once(site):
    url = site.page("/busy", b"", status=503, headers={"Retry-After": "3600"})
    started = time.monotonic()
    out = fetch(url, replace(OPTS, retries=3, retry_after_max_s=5))
    assert failed(out, "HTTP 503", "retry after 3600s", "CORPUS_SEARCH_FETCH_RETRY_AFTER_MAX_S=5")
    assert time.monotonic() - started < 2 and site.hits["/busy"] == 1


def test_retry_after_past_the_deadline_fails_at_once(site):
    url = site.page("/busy", b"", status=429, headers={"Retry-After": "4"})
    started = time.monotonic()
    out = fetch(url, replace(OPTS, retries=3, deadline_s=2))
    assert failed(out, "HTTP 429", "would pass the fetch deadline of 2s")
    assert time.monotonic() - started < 1.5


def test_a_dripping_body_fails_at_the_deadline_and_is_not_indexed(site):
    url = site.page("/drip", PAGE, drip_s=0.2)
    started = time.monotonic()
    out = fetch(url, replace(OPTS, deadline_s=1.5))
    elapsed = time.monotonic() - started
    assert failed(out, "fetch deadline of 1.5s", "CORPUS_SEARCH_FETCH_DEADLINE_S")
    assert 1.4 <= elapsed < 3


def test_dripping_headers_fail_at_the_deadline(site):
    raw = b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * 200 + b"\r\n\r\n" + PAGE.encode()
    site.routes["/slowhead"] = Route(raw=raw, drip_s=0.1)
    started = time.monotonic()
    out = fetch(site.url("/slowhead"), replace(OPTS, deadline_s=1.0, retries=2))
    assert failed(out, "fetch deadline of 1s") and time.monotonic() - started < 2.5


# --------------------------------------------------------------------------- what a 2xx/304 carries


def test_a_304_to_an_unconditional_request_is_a_failure(site):
    url = site.page("/p", b"", status=304, etag=False)
    assert failed(fetch(url), "HTTP 304 (not modified) to a request that was not conditional")


def test_conditional_get_still_answers_not_modified(site):
    url = site.page("/p", PAGE)
    first = fetch(url)
    state = ArticleState(article_key(url_origin(url), url), url, url_origin(url), "h", first.etag, None)
    assert isinstance(fetch(url, states={state.key: state}), NotModified)
    assert site.not_modified["/p"] == 1


@pytest.mark.parametrize("body", [b"", b"  \r\n\t \n"])
def test_an_empty_or_blank_200_is_a_failure(site, body):
    assert failed(fetch(site.page("/empty", body)), "empty response")


@pytest.mark.parametrize(
    "body", [b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", PNG, b"GIF89a\x01\x00", b"\xff\xd8\xff\xe0JFIF", b"PK\x03\x04zip",
             os.urandom(4096)],
    ids=["pdf", "png", "gif", "jpeg", "zip", "random"],
)
def test_binary_served_as_html_is_not_text(site, body):
    assert failed(fetch(site.page("/bin", body, content_type="text/html")), "binary content, not text")


def test_control_characters_without_nul_are_not_text(site):
    body = bytes(b % 31 + 1 for b in os.urandom(2000) if b % 31 + 1 not in (9, 10, 13))
    assert failed(fetch(site.page("/ctl", body, content_type="text/plain")), "binary content", "control characters")


def test_legacy_charsets_and_utf16_are_still_text(site):
    latin1 = ("<p>" + "Café à la crème, déjà vu près de l'hôtel. " * 40 + "</p>").encode("latin-1")
    cyrillic = ("<p>" + "Москва — столица России, крупнейший город страны. " * 40 + "</p>").encode("cp1251")
    utf16 = ("<p>" + "Paris is the capital of France. " * 40 + "</p>").encode("utf-16")  # with a BOM: NULs galore
    urls = [site.page("/latin1", latin1, content_type="text/html"),
            site.page("/ru", cyrillic, content_type="text/html; charset=windows-1251"),
            site.page("/u16", utf16, content_type="text/html")]
    outs = fetch_urls(urls, {}, OPTS)
    assert [type(o).__name__ for o in outs] == ["Article"] * 3, outs
    assert "Москва" in outs[1].body and "Paris" in outs[2].body


# --------------------------------------------------------------------------- local files, directories, dumps


@pytest.mark.parametrize(("name", "data"), [("noise.txt", os.urandom(20_000)), ("image.html", PNG), ("doc.md", b"%PDF-1.4\n")])
def test_a_binary_local_file_is_not_text(tmp_path, name, data):
    (tmp_path / name).write_bytes(data)
    assert failed(read_local_file(tmp_path / name, doc_id=name, source=str(tmp_path)), "binary content, not text")


def test_a_local_file_over_the_size_cap_is_refused_before_reading(tmp_path):
    big = tmp_path / "big.txt"
    with open(big, "wb") as fh:  # sparse: 50 MB without writing them
        fh.truncate(50 * 1024 * 1024)
    out = read_local_file(big, doc_id="big.txt", source=str(tmp_path), max_bytes=1024 * 1024)
    assert failed(out, "52428800 bytes", "over the limit of 1048576", "CORPUS_SEARCH_FETCH_MAX_BYTES")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_named_pipe_is_not_read(tmp_path):
    os.mkfifo(tmp_path / "pipe.txt")
    assert failed(read_local_file(tmp_path / "pipe.txt", doc_id="pipe.txt", source=str(tmp_path)), "not a regular file")


def test_symlinks_leading_outside_a_directory_source_are_not_followed(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_text("outside the tree")
    (root / "own.md").write_text("inside")
    (root / "sub" / "note.txt").write_text("inside too")
    (root / "leak.txt").symlink_to(outside / "secret.txt")
    (root / "leakdir").symlink_to(outside, target_is_directory=True)
    (root / "alias.md").symlink_to(root / "own.md")  # within the tree: the file is listed once, as own.md
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)  # a loop must end
    assert list_directory(root, follow_symlinks=False) == ["own.md", "sub/note.txt"]
    # leak.txt and leakdir/secret.txt are one file outside the tree: listed once, under the first path.
    assert list_directory(root, follow_symlinks=True) == ["leak.txt", "own.md", "sub/note.txt"]


def test_a_file_that_links_inside_the_tree_reach_by_several_paths_is_listed_once_under_its_own_path(tmp_path):
    root = tmp_path / "notes"
    (root / "blog" / "2024").mkdir(parents=True)
    (root / "blog" / "2024" / "raft.md").write_text("# Raft\n\nRaft elects a leader.")
    (root / "latest").symlink_to(root / "blog" / "2024", target_is_directory=True)  # a folder link
    (root / "a-first.md").symlink_to(root / "blog" / "2024" / "raft.md")  # sorts before the real path
    (root / ".hidden").mkdir()
    (root / ".hidden" / "draft.md").write_text("a draft")
    (root / "draft.md").symlink_to(root / ".hidden" / "draft.md")  # its own path is not listed: the link's is
    assert list_directory(root) == ["blog/2024/raft.md", "draft.md"]


def _dump(tmp_path: Path) -> SourceSpec:
    path = tmp_path / "dump.jsonl"
    path.write_text("")
    return SourceSpec(str(path), "jsonl", str(path))


def test_a_deeply_nested_dump_line_is_that_lines_failure(tmp_path):
    spec = _dump(tmp_path)
    good = '{"_id": "d1", "title": "T", "text": "fine"}'
    outs = parse_dump_lines(spec, [(1, "[" * 100_000), (2, good), (3, '{"a": ' * 50_000 + "1" + "}" * 50_000)])
    assert failed(outs[0], "dump.jsonl:1") and isinstance(outs[1], Article) and failed(outs[2], "dump.jsonl:3")


def test_an_oversized_dump_line_is_a_failure_naming_the_setting(tmp_path):
    spec = _dump(tmp_path)
    line = '{"_id": "big", "text": "' + "x" * 5000 + '"}'
    [out] = parse_dump_lines(spec, [(7, line)], max_bytes=1024)
    assert failed(out, "dump.jsonl:7", "longer than the limit of 1024 characters", "CORPUS_SEARCH_FETCH_MAX_BYTES")


@pytest.mark.parametrize("line", ["[1, 2]", "42", '"text"', "null", '{"_id": 1, "text": ["not", "a", "string"]}'])
def test_a_dump_line_that_is_not_a_record_is_a_failure(tmp_path, line):
    [out] = parse_dump_lines(_dump(tmp_path), [(1, line)])
    assert failed(out, "dump.jsonl:1")


# --------------------------------------------------------------------------- through the real flow


def test_flow_a_refused_url_fails_alone_and_the_local_directory_is_written(run_index, site, tmp_path, db_uri):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "lyon.md").write_text("Lyon is a city in France at the confluence of the Rhône and the Saône.")
    (notes / "photo.txt").write_bytes(PNG)
    loop = redirect(site, "/loop", "/loop")
    summary = run_index([loop, notes], settings_overrides={"fetch_retries": 0})
    assert summary["articles_failed"] == 2 and summary["articles_fetched"] == 1
    errors = {f["doc_id"]: f["error"] for f in summary["failures"]}
    assert "too many redirects" in errors[loop] and "binary content" in errors["photo.txt"]
    assert {r["doc_id"] for r in table_rows(db_uri)} == {"lyon.md"}


def test_flow_the_safe_default_refuses_the_local_server(run_index, site, db_uri):
    with pytest.raises(NothingIndexedError) as err:  # its only source was refused: the run is Failed
        run_index([site.page("/p", PAGE)], settings_overrides={"fetch_allow_private": False})
    summary = err.value.summary
    assert summary["articles_failed"] == 1
    assert "CORPUS_SEARCH_FETCH_ALLOW_PRIVATE=true" in summary["failures"][0]["error"]
    assert site.hits == {}


def test_flow_an_empty_200_keeps_the_articles_old_rows(run_index, site, db_uri):
    url = site.page("/paris.html", PAGE)
    run_index([url])
    before = table_rows(db_uri)
    assert before
    site.page("/paris.html", b"")
    with pytest.raises(NothingIndexedError) as err:
        run_index([url])
    summary = err.value.summary
    assert summary["articles_failed"] == 1 and "empty response" in summary["failures"][0]["error"]
    assert table_rows(db_uri) == before


def test_flow_a_gzipped_dump_with_a_hostile_line_indexes_the_rest(run_index, tmp_path, db_uri):
    path = tmp_path / "corpus.jsonl.gz"
    good = '{"_id": "d1", "title": "Lyon", "text": "Lyon is a city in France at the confluence of two rivers."}'
    with gzip.open(path, "wt") as fh:
        fh.write("[" * 100_000 + "\n" + good + "\n")
    summary = run_index([path])
    assert summary["articles_failed"] == 1 and summary["articles_fetched"] == 1
    assert {r["doc_id"] for r in table_rows(db_uri)} == {"d1"}
