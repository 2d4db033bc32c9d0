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


def url_origin(url: str) -> str:
    """``scheme://host[:port]/`` of ``url``: the ``source`` of its rows."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/", "", ""))
