"""One document → passages for ``search-document``: fetch (URL or file) and split, no index."""

from __future__ import annotations

from query.settings import Settings
from tasks.fetch import (
    HttpOptions,
    SourceError,
    classify_source,
    fetch_urls,
    read_local_file,
)
from tasks.records import Article, FetchFailure
from tasks.split import SplitOptions, split_article

#: Room left for the query inside the cross-encoder's 512 tokens.
QUERY_BUDGET = 64


def fetch_document(source: str, settings: Settings) -> Article:
    """Fetch one URL or read one local file; a failure is a clear error."""
    from pathlib import Path

    if "://" not in source and not Path(source).expanduser().exists():  # classify_source would offer dumps too
        raise SourceError(f"source {source!r} does not exist: search-document takes one URL or one file")
    spec = classify_source(source)
    if spec.kind == "url":
        outcome = fetch_urls([spec.spec], {}, HttpOptions.from_settings(settings))[0]
    elif spec.kind == "file":
        outcome = read_local_file(Path(spec.root), doc_id=Path(spec.root).name, source=spec.root)
    else:
        raise SourceError(f"search-document takes one URL or one file, not a {spec.kind}: {source!r}")
    if isinstance(outcome, FetchFailure):
        raise SourceError(f"cannot fetch {source!r}: {outcome.error}")
    return outcome


def document_passages(article: Article, settings: Settings, reranker=None) -> list[dict]:
    """The article's paragraphs as passages for ``query.rank_passages``, split to fit the model that ranks
    them: ``reranker`` (a loaded cross-encoder, leaving room for the query), or with None the bi-encoder,
    whose window is shorter."""
    # The models' own (locked) counts: their shared tokenizers are not thread-safe beside a search's encode.
    if reranker is not None:
        count, max_tokens = reranker.token_counts, 512 - QUERY_BUDGET
    else:
        from query.models import bi_encoder_from_settings

        enc = bi_encoder_from_settings(settings)
        count, max_tokens = enc.token_counts, enc.max_seq_length - 2
    opts = SplitOptions(max_tokens=max_tokens, min_chars=settings.min_paragraph_chars, encode_title=False,
                        main_content=settings.main_content)
    paragraphs = split_article(article, opts, count)
    return [{"id": p.id, "doc_id": p.doc_id, "title": p.title, "text": p.text, "source": p.source,
             "position": p.position} for p in paragraphs]
