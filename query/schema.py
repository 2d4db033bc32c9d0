"""The index contract: the Arrow schema of paragraph rows and the table metadata that pins the encoder.

Every writer (``tasks/store.py``) and reader (``query/searcher.py``) goes through this module,
so a table written by one version of the encoder can never be silently queried with another.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass

import pyarrow as pa

from query.errors import CorpusSearchError, InvalidNameError
from query.storage import table_names

#: v2 (issue 12): ``source`` is the file's full path or the URL, the root it was indexed through is
#: ``origin``, and rows carry ``published`` and ``metadata``. ``corpus-search migrate`` upgrades v1 tables.
SCHEMA_VERSION = 2
METADATA_KEY = b"corpus_search"

#: An article's own fields (author, keywords, a record's extras): text values under text keys.
METADATA_TYPE = pa.map_(pa.string(), pa.string())

#: Columns of a paragraph row, in order, without the vector (whose width depends on the encoder).
PARAGRAPH_FIELDS: list[pa.Field] = [
    pa.field("id", pa.string(), nullable=False),
    pa.field("doc_id", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),  # what a user opens: the file's full path, or the URL
    pa.field("title", pa.string()),
    pa.field("position", pa.int32(), nullable=False),
    pa.field("text", pa.string(), nullable=False),
    pa.field("content_hash", pa.string(), nullable=False),
    pa.field("indexed_at", pa.timestamp("us", tz="UTC"), nullable=False),
    # The root the article was indexed through (a directory, a dump, a site, ``records:...``). With
    # ``doc_id`` it is the article's identity, so an article keeps its ids whichever root reaches it.
    pa.field("origin", pa.string(), nullable=False),
    pa.field("published", pa.timestamp("us", tz="UTC")),
    # Text values only: a map keeps any user key without a schema change, and filters reach each key.
    pa.field("metadata", METADATA_TYPE),
]

#: Columns a query returns: everything but the vector.
RESULT_COLUMNS = [f.name for f in PARAGRAPH_FIELDS]

#: Per-article state used for conditional re-fetching (ETag / Last-Modified / body hash).
ARTICLE_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),  # hash(source, doc_id)
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("body_hash", pa.string(), nullable=False),
        pa.field("etag", pa.string()),
        pa.field("last_modified", pa.string()),
        pa.field("paragraphs", pa.int32(), nullable=False),
        pa.field("fetched_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("origin", pa.string(), nullable=False),
        # Size, mtime and split settings of a local file: when they match, the file is not even read.
        pa.field("file_stamp", pa.string()),
    ]
)


@dataclass(frozen=True)
class IndexMetadata:
    """What a table was built with. A reader refuses a table whose encoder differs from its own."""

    encoder: str
    dim: int
    normalized: bool
    encode_title: bool
    schema_version: int = SCHEMA_VERSION
    #: The encoder's token limit, which shapes the paragraphs: with it stored, a run that finds nothing
    #: changed compares fingerprints without loading the encoder. Not part of the compatibility check.
    max_seq_length: int | None = None

    def to_bytes(self) -> bytes:
        data = asdict(self)
        if data["max_seq_length"] is None:
            del data["max_seq_length"]
        return json.dumps(data, sort_keys=True).encode()

    @classmethod
    def from_schema(cls, schema: pa.Schema, *, table: str = "") -> IndexMetadata:
        """Read the metadata of a table's schema; a table without it was not written by corpus-search."""
        raw = raw_metadata(schema)
        if raw is None:
            raise IndexContractError(
                f"table {table!r} has no corpus-search metadata: it was not written by `corpus-search index`. "
                "Re-index it into a new collection."
            )
        data = json.loads(raw)
        return cls(**{k: data[k] for k in ("encoder", "dim", "normalized", "encode_title", "schema_version")},
                   max_seq_length=data.get("max_seq_length"))


class IndexContractError(CorpusSearchError, ValueError):
    """A table does not match what the reader or writer expects (encoder, dimension, schema version)."""


def paragraph_schema(meta: IndexMetadata) -> pa.Schema:
    """The Arrow schema of paragraph rows for an encoder of ``meta.dim`` dimensions, carrying ``meta``."""
    vector = pa.field("vector", pa.list_(pa.float32(), meta.dim), nullable=False)
    return pa.schema([*PARAGRAPH_FIELDS, vector], metadata={METADATA_KEY: meta.to_bytes()})


def migrate_hint(collection: str, db_uri: str | None = None) -> str:
    """The command that upgrades ``collection`` to this schema version."""
    return f"corpus-search migrate {collection}" + (f" --db {db_uri}" if db_uri else "")


def check_schema_version(stored: IndexMetadata, *, collection: str, db_uri: str | None = None) -> None:
    """Refuse a table of another schema version, naming the migration command for an older one."""
    if stored.schema_version == SCHEMA_VERSION:
        return
    if stored.schema_version < SCHEMA_VERSION:
        raise IndexContractError(
            f"collection {collection!r} uses index schema v{stored.schema_version}, this corpus-search "
            f"expects v{SCHEMA_VERSION} (source = the file or URL, origin, published, metadata). Upgrade it in "
            f"place, keeping every vector: {migrate_hint(collection, db_uri)}"
        )
    raise IndexContractError(
        f"collection {collection!r} uses index schema v{stored.schema_version}, newer than this "
        f"corpus-search's v{SCHEMA_VERSION}: upgrade corpus-search to read it."
    )


def check_compatible(stored: IndexMetadata, expected: IndexMetadata, *, collection: str,
                     db_uri: str | None = None) -> None:
    """Refuse a table whose encoder, dimension or schema version differs from the configured one."""
    check_schema_version(stored, collection=collection, db_uri=db_uri)
    if (stored.encoder, stored.dim, stored.normalized) != (expected.encoder, expected.dim, expected.normalized):
        raise IndexContractError(
            f"collection {collection!r} was indexed with bi-encoder {stored.encoder!r} "
            f"(dim {stored.dim}, normalized={stored.normalized}), but the configured bi-encoder is "
            f"{expected.encoder!r} (dim {expected.dim}, normalized={expected.normalized}). "
            f"Set CORPUS_SEARCH_BI_ENCODER={stored.encoder!r} (or --bi-encoder) to query it, "
            "or re-index into a new collection with the new encoder."
        )


#: LanceDB's table-name alphabet, without a leading "." (a hidden directory) and at most 128 characters.
_NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")
#: Internal tables are named ``<collection>__<suffix>`` (``__articles``, ``__runs``...), so ``__`` is reserved:
#: a collection ``z__articles`` would be the article table of ``z``.
RESERVED_SEPARATOR = "__"


def is_internal_table(name: str) -> bool:
    """True for a collection's internal tables ``<collection>__<suffix>`` (collection names cannot hold '__')."""
    return RESERVED_SEPARATOR in name

NAME_RULE = (
    "use 1 to 128 ASCII letters, digits, '_', '-' or '.', not starting with '.' and without '__' "
    "(reserved for internal tables), e.g. 'my-articles' or 'wiki_2024.en'"
)


def validate_collection_name(name: object) -> str:
    """Return ``name`` if it is a usable collection name, else raise ``InvalidNameError`` saying the rule.

    Called before any file is touched, so a name like ``../x`` never reaches the file system.
    """
    if not isinstance(name, str):
        raise InvalidNameError(f"collection name must be text, got {type(name).__name__}: {NAME_RULE}")
    shown = repr(name if len(name) <= 60 else name[:60] + "...")
    if not _NAME_RE.fullmatch(name):
        why = "is empty" if not name else f"is {len(name)} characters long" if len(name) > 128 else "is not allowed"
        raise InvalidNameError(f"collection name {shown} {why}: {NAME_RULE}")
    if RESERVED_SEPARATOR in name:
        raise InvalidNameError(f"collection name {shown} contains '__' (reserved for internal tables): {NAME_RULE}")
    return name


def raw_metadata(schema: pa.Schema) -> bytes | None:
    """The corpus-search metadata of a table's schema as stored (None: a table corpus-search did not write)."""
    return (schema.metadata or {}).get(METADATA_KEY)


def articles_table_name(collection: str) -> str:
    """The companion table holding per-article fetch state of ``collection``."""
    return f"{collection}__articles"


def count_documents(db, table, collection: str) -> int:
    """Distinct documents with paragraphs in ``collection`` (``table`` its paragraph table, open in ``db``).

    The article-state table's rows that hold some: an empty file (no text to index) is
    remembered there, so that it is not read again, but is not a document you can find. Without that
    table, the distinct (source, doc_id) of the paragraphs.
    """
    name = articles_table_name(collection)
    if name in table_names(db):
        return db.open_table(name).count_rows("paragraphs > 0")
    cols = [c for c in ("source", "doc_id") if c in table.schema.names]
    if not cols:
        return 0
    return table.to_lance().to_table(columns=cols).group_by(cols).aggregate([]).num_rows
