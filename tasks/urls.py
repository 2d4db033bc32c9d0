"""URL identity: one URL, one doc_id; the origin a URL's rows are stored under."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit


def canonical_url(url: str) -> str:
    """Lower-case scheme and host, drop the fragment and default ports: one URL, one doc_id."""
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    if ":" in host:  # an IPv6 literal keeps its brackets, or its colons read as a port
        host = f"[{host}]"
    port = parts.port
    if port and not ((parts.scheme == "http" and port == 80) or (parts.scheme == "https" and port == 443)):
        host = f"{host}:{port}"
    return urlunsplit((parts.scheme.lower(), host, remove_dot_segments(parts.path or "/"), parts.query, ""))


def remove_dot_segments(path: str) -> str:
    """RFC 3986's remove_dot_segments: ``/docs/./a/../b`` is ``/docs/b``, the resource httpx requests for it.
    Kept, ``/docs/./`` and ``/docs/`` were two doc_ids of one page, indexed twice."""
    segments = path.split("/")
    if "." not in segments and ".." not in segments:
        return path
    out: list[str] = []
    for segment in segments:
        if segment == "..":
            if len(out) > 1:  # never above the root (the leading "")
                out.pop()
        elif segment != ".":
            out.append(segment)
    if segments[-1] in (".", ".."):  # "/a/." names the directory: "/a/"
        out.append("")
    return "/".join(out) or "/"


def page_stamp(settings_stamp: str, answered_by: str | None) -> str:
    """A page's stored stamp: its split settings and, when a redirect led there, the URL that answered.

    The page's ETag and Last-Modified are that URL's, so they are sent to it only (``validators_url``).
    """
    return f"{settings_stamp} {answered_by}" if answered_by else settings_stamp


def stamp_settings(stamp: str | None) -> str:
    """The split-settings part of a page's stamp (see ``page_stamp``)."""
    return (stamp or "").partition(" ")[0]


def validators_url(stamp: str | None, url: str) -> str:
    """The URL a page's stored validators came from: the redirect target its stamp names, or ``url``."""
    return (stamp or "").partition(" ")[2] or url


def has_credentials(url: str) -> bool:
    """Whether ``url`` carries a user name or password (``https://ann:secret@host/``), a password with an
    unencoded ``/``, ``?`` or ``#`` included (``https://ann:se/cret@host/``, which parsers read as a host)."""
    try:
        if "@" in urlsplit(url.strip()).netloc:
            return True
    except ValueError:
        if "@" in url.split("://", 1)[-1].split("/", 1)[0]:
            return True
    return _loose_userinfo(url) is not None


#: ``user:password@`` right after the scheme, the password holding a character a host never has: a user's
#: unencoded ``/`` in it ended the authority early for URL parsers. A port (``host:8080/a@b``) is digits.
_LOOSE_USERINFO = re.compile(r"^[^:/?#@\s]+:(?![0-9]*(?:[/?#]|$))[^@?#\s]*@")


def _loose_userinfo(url: str) -> str | None:
    _, sep, rest = url.strip().partition("://")
    m = _LOOSE_USERINFO.match(rest) if sep else None
    return m.group(0) if m else None


def without_credentials(url: str) -> str:
    """``url`` with any user name and password cut out: what a failure or a log may name."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    if loose := _loose_userinfo(url):
        return f"{scheme}://{rest.lstrip()[len(loose):]}"
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    netloc = rest[:cut]
    return f"{scheme}://{netloc.rpartition('@')[2]}{rest[cut:]}"


def url_origin(url: str) -> str:
    """``scheme://host[:port]/`` of ``url``: the ``source`` of its rows."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/", "", ""))
