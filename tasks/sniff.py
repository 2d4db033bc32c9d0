"""Tell binary content from text before it is parsed into hundreds of garbage paragraphs.

A PDF or a PNG served as ``text/html`` (or saved as ``notes.txt``) decodes "fine" with
replacement characters; indexing it would fill a collection with noise. Checks, cheapest first:
known magic numbers, NUL bytes (unless a byte-order mark or the Content-Type header says utf-16/32),
then the share of control and undecodable characters.
"""

from __future__ import annotations

import codecs
import re

#: Bytes looked at: enough for every signature and a fair sample of the text.
SNIFF_BYTES = 8192
#: Above this share of control characters (C0 except whitespace, DEL) text is not text.
MAX_CONTROL_SHARE = 0.05
#: Above this share of control plus undecodable characters text is not text. Generous, because a
#: latin-1 page read as utf-8 has a few percent of replacement characters and is still a page.
MAX_BAD_SHARE = 0.30

# Only signatures no text file starts with; other binary formats (bzip2, MP3, fonts, ...) start
# with plain letters, and are caught by their NUL bytes instead.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "PDF"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"PK\x03\x04", "ZIP"),
    (b"PK\x05\x06", "ZIP"),
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"\x7fELF", "ELF"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "OLE (old Office)"),
    (b"\x00asm", "WebAssembly"),
)
_WIDE_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)
_WHITESPACE_CONTROLS = {"\t", "\n", "\r", "\f", "\v", "\x1b"}  # ESC: ANSI colours in text logs


def wide_charset(content_type: str | None) -> bool:
    """Whether a Content-Type header declares utf-16 or utf-32 (``text/html; charset=utf-16le``): text whose
    every other byte may be NUL, byte-order mark or not."""
    match = _CHARSET.search(content_type or "")
    if not match:
        return False
    try:
        name = codecs.lookup(match.group(1).strip().lower()).name
    except LookupError:
        return False
    return name.startswith(("utf-16", "utf-32"))


_CHARSET = re.compile(r"charset\s*=\s*[\"']?([^\s;\"',]+)", re.IGNORECASE)


def utf16_without_bom(raw: bytes) -> str | None:
    """``"utf-16-le"`` or ``"utf-16-be"`` for text that is plainly UTF-16 without a byte-order mark (what some
    Windows tools and database exports write): nearly every other byte is NUL (the high byte of a Latin
    character) and the bytes between are not. Else None (binary data has NULs anywhere).

    The whole of ``raw`` is counted, not its head: binary data after a head of UTF-16 text breaks the pattern,
    and is then refused as binary (10 MB take a few milliseconds)."""
    pairs = len(raw) // 2
    if pairs < 16:
        return None
    even, odd = raw[0:pairs * 2:2].count(0), raw[1:pairs * 2:2].count(0)
    if odd >= 0.7 * pairs and even <= 0.02 * pairs:
        return "utf-16-le"
    if even >= 0.7 * pairs and odd <= 0.02 * pairs:
        return "utf-16-be"
    return None


def binary_signature(raw: bytes, *, wide: bool = False) -> str | None:
    """The cheap, byte-level verdict (magic numbers, NUL bytes): call it before decoding, since
    charset detection on a megabyte of binary is slow. ``wide``: the bytes are declared utf-16 or utf-32
    (:func:`wide_charset` of the Content-Type header), whose NUL bytes are text."""
    head = raw[:SNIFF_BYTES]
    stripped = head.lstrip()
    for magic, name in _MAGIC:
        if stripped.startswith(magic):
            return f"{name} signature"
    if (stripped[4:12] in (b"ftypisom", b"ftypmp42", b"ftypqt  ")) or (
        stripped.startswith(b"RIFF") and stripped[8:12] in (b"WEBP", b"WAVE", b"AVI ")
    ):
        return "media container signature"
    wide = _wide(raw, wide)
    if not wide and b"\x00" in head:
        return "NUL bytes"
    if not wide and (tail := len(raw) - SNIFF_BYTES) > 0 and raw.count(b"\x00", SNIFF_BYTES) > max(8, tail // 1000):
        # Text with binary data after it (a log with a core dump appended, two files concatenated): random bytes
        # are 0.4 % NUL. A few stray NULs in a long text are a glitch, not binary. (C-speed: 1 ms for 10 MB.)
        return f"NUL bytes after the first {SNIFF_BYTES // 1024} KB (binary data after the text?)"
    return None


def _wide(raw: bytes, declared: bool) -> bool:
    """Whether ``raw`` is utf-16/32 text (declared, a byte-order mark, or the BOM-less pattern): its NULs are text."""
    return declared or raw[:SNIFF_BYTES].startswith(_WIDE_BOMS) or utf16_without_bom(raw) is not None


def binary_reason(raw: bytes, text: str | None = None, *, wide: bool = False) -> str | None:
    """Why ``raw`` is binary ("PDF signature", "NUL bytes", "40% control characters"), or None for text.

    ``text`` is the decoded body when the caller has it (so a correctly detected legacy charset
    is not mistaken for undecodable bytes); otherwise the head is read as utf-8. ``wide``: see
    :func:`binary_signature`.
    """
    if why := binary_signature(raw, wide=wide):
        return why
    head = raw[:SNIFF_BYTES]
    sample = text[:SNIFF_BYTES] if text is not None else head.decode("utf-8", errors="replace")
    if not sample:
        return None
    controls = sum(1 for c in sample if (c < " " and c not in _WHITESPACE_CONTROLS) or c == "\x7f")
    bad = controls + sample.count("\ufffd")
    if controls / len(sample) > MAX_CONTROL_SHARE:
        return f"{controls / len(sample):.0%} control characters"
    if bad / len(sample) > MAX_BAD_SHARE:
        return f"{bad / len(sample):.0%} control or undecodable characters"
    if text is not None and _wide(raw, wide):  # after the head's checks, whose verdicts say more when they fire
        return _wide_garbage(text)
    return None


#: Above this share of control, undecodable and non-characters, utf-16/32 text is not text: random bytes decoded
#: so give about 3 % (lone surrogates, U+FFFF padding), text of any script next to none, even text holding a
#: few U+FFFD of an earlier lossy conversion or a man page's backspaces.
MAX_WIDE_BAD_SHARE = 0.01


def _wide_garbage(text: str) -> str | None:
    """Binary data in utf-16/32 text (declared, or with a byte-order mark): after its head, or short enough to
    pass the head's share checks, which allow the few percent that legacy text read as utf-8 has. The byte check
    must let NULs through here, so the decoded text is counted, all of it."""
    bad = sum(1 for c in text if (c < " " and c not in _WHITESPACE_CONTROLS) or c in "\ufffd\ufffe\uffff")
    if bad > max(8, len(text) * MAX_WIDE_BAD_SHARE):
        return f"{bad / len(text):.1%} control or undecodable characters in utf-16/32 text (binary data in it?)"
    return None
