"""URL identity: one URL, one doc_id; the origin a URL's rows are stored under."""

from __future__ import annotations

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
    return urlunsplit((parts.scheme.lower(), host, parts.path or "/", parts.query, ""))


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
    """Whether ``url`` carries a user name or password (``https://ann:secret@host/``)."""
    try:
        return "@" in urlsplit(url.strip()).netloc
    except ValueError:
        return "@" in url.split("://", 1)[-1].split("/", 1)[0]


def without_credentials(url: str) -> str:
    """``url`` with any user name and password cut out: what a failure or a log may name."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    netloc = rest[:cut]
    return f"{scheme}://{netloc.rpartition('@')[2]}{rest[cut:]}"


def url_origin(url: str) -> str:
    """``scheme://host[:port]/`` of ``url``: the ``source`` of its rows."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/", "", ""))
