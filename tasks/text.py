"""Plain text helpers with one home: the whitespace rule for indexed text, and opening (gzipped) text files."""

from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path

# Invisible characters that str.split() does not treat as whitespace (zero-width space/joiners, word
# joiner, BOM, soft hyphen): left in, they glue or split words unpredictably for both tokenizers.
_INVISIBLE = str.maketrans("", "", "\u200b\u200c\u200d\u2060\ufeff\u00ad")


def normalize_ws(text: str) -> str:
    """Collapse every run of whitespace (newlines, tabs, nbsp) to one space, drop invisible characters, strip."""
    return " ".join(text.translate(_INVISIBLE).split())


#: What reading a file opened by :func:`open_text` can raise mid-stream: an OS error, bad text under
#: ``errors="strict"``, or a gzip cut short (EOFError) or corrupt inside (zlib.error; a bad CRC is an OSError).
READ_ERRORS = (OSError, UnicodeError, EOFError, zlib.error)


def open_text(path: Path, errors: str = "replace") -> io.TextIOBase:
    """A UTF-8 text file, gunzipped when its name ends in ``.gz``. Dumps replace bad bytes; ``errors="strict"`` raises.

    A leading byte-order mark (Windows tools write one) is dropped: read as text, it would glue itself to the
    first record's first character and break that record.
    """
    if path.name.lower().endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", errors=errors)
    return open(path, encoding="utf-8-sig", errors=errors)  # noqa: SIM115 - closed by the caller
