"""Training data for a collection's re-ranker: queries, their positive paragraph, and hard negatives.

Two signals:

* **judgments** (BEIR ``queries.jsonl`` + ``qrels/<split>.tsv``): each judged query's positives are its
  relevant documents' paragraphs (the one the first stage ranks highest, else the document's first);
* **self-supervised**: pseudo-queries cut out of the collection itself, three kinds mixed so that no
  single surface form dominates:

  - ``title``: a document's title asks for one of its paragraphs. The title is taken off every passage of
    that example, or the model would only learn to spot the title string;
  - ``sentence``: a sentence cut out of its paragraph asks for the rest of the paragraph (the inverse
    cloze task, Lee et al. 2019): the query shares meaning, not all of its words, with the positive;
  - ``terms``: the paragraph's most salient terms (tf·idf against the sample), as a keyword query.

Hard negatives are the collection's own hybrid top-k for the query minus every paragraph of a positive's
document (a paragraph of the same document is too often relevant too, a false negative) and minus
passages identical to the positive.

Examples are split into train and dev by a hash of their query id (stable across runs), never by the
order of the file, and never touching test queries: only the training split is read.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from query.errors import CorpusSearchError, InvalidQueryError
from query.filters import in_list
from query.searcher import Hit, Searcher, passage_text
from tasks.datasets import DatasetFormatError, judged_as_collection, load_dataset
from tasks.split import split_sentences

#: Hard negatives per training query; with the positive that is 1 + NEGATIVES passages per query. Not fewer
#: to fit more queries in a budget: 3 negatives over 64 % more pseudo-queries, at the same compute, trained a
#: weaker re-ranker (SciFact test alone 0.656 against 0.682; benchmarks/RESULTS.md, "Stop 28").
NEGATIVES = 7
#: Depth of the first-stage ranking that hard negatives and judged positives are drawn from.
MINING_DEPTH = 30
#: Kinds of self-supervised pseudo-queries, mixed in equal shares. Half of them written by a small language
#: model instead (SmolLM2-135M-Instruct stating each paragraph's main point) made a better re-ranker alone on
#: SciFact test but not a better fused ranking (+0.012 at the gate's weight): not adopted
#: (benchmarks/RESULTS.md, "Stop 34").
PSEUDO_KINDS = ("title", "sentence", "terms")

# Combining marks, which \w does not match: without them a Devanagari or Thai word was cut at its first vowel sign.
_MARKS = "\u0300-\u036f\u0483-\u0489\u0591-\u05c7\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed\u0900-\u0dff" \
         "\u0e00-\u0e7f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff"
_WORD = re.compile(rf"[^\W\d_][\w'{_MARKS}-]*", re.UNICODE)
# Scripts written without spaces between words (Chinese, Japanese): a run of them is no one word.
_UNSPACED = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
#: Characters of unspaced script per word, roughly (Chinese words are one to three characters).
_CHARS_PER_WORD = 1.5
# Full stops of other scripts than tasks.split's (which splits indexed text, and whose rules an index stamps):
# Devanagari । ॥, Urdu ۔ and ؟, Ethiopic ።. Cut after them here, for pseudo-queries only.
_MORE_ENDS = re.compile(r"(?<=[।॥۔؟።])\s+")
_HANGUL = re.compile(r"[\uac00-\ud7af]")
# A sentence piece ending in an abbreviation: one letter ("C."), letters with stops inside ("e.g.", "i.e."), or a
# usual one. Lower-case text's own sentence ends ("so.", "it.") are none of these.
_ABBREVIATION = re.compile(r"(?:^|[\s(])(?:[^\W\d_]|(?:[^\W\d_]\.)+[^\W\d_]|dr|mr|mrs|ms|prof|vs|al|fig|figs|no|nos|"
                           r"st|etc|cf|approx|ca|resp|eq|ref|vol|ed|eds)\.$", re.IGNORECASE)
# Function words never make a salient-term query (a short list: idf takes care of the rest).
_STOP = frozenset(
    "a an and are as at be but by for from has have in into is it its of on or that the their this to was "
    "were which with we our these those than then there been not also can may such using used between".split()
)


class TrainingDataError(CorpusSearchError, ValueError):
    """Not enough usable training queries (no judgments match the collection, or the collection is too small)."""


@dataclass
class Example:
    """One training (or dev) query with its positive passage, hard negatives and relevant documents."""

    qid: str
    query: str
    kind: str  # "judged" or one of PSEUDO_KINDS
    positive: str = ""
    negatives: list[str] = field(default_factory=list)
    relevant: dict[str, int] = field(default_factory=dict)  # doc id -> grade, for the dev gate
    hide: str | None = None  # a paragraph id the dev gate hides from the candidates (the query's own source)


def check_signal(judgments: str | None, self_supervised: bool) -> str:
    """The training signal of a run: exactly one of judgments and self-supervised, else a usage error."""
    if bool(judgments) == bool(self_supervised):
        raise InvalidQueryError("give exactly one training signal: --judgments DATASET_DIR or --self-supervised")
    return "judgments" if judgments else "self-supervised"


def is_dev(qid: str, dev_share: float) -> bool:
    """Stable train/dev assignment of a query id (a hash, so adding queries never reshuffles the others)."""
    h = int.from_bytes(hashlib.sha256(qid.encode("utf-8")).digest()[:8], "big")
    return h / 2**64 < dev_share


def fingerprint(examples: Sequence[Example], seed: int) -> str:
    """sha256 over every training example and the seed: the same data and seed give the same fingerprint."""
    h = hashlib.sha256(f"seed={seed}\n".encode())
    for ex in examples:
        for part in (ex.qid, ex.query, ex.positive, *ex.negatives):
            h.update(part.encode("utf-8", "surrogatepass") + b"\x00")
    return h.hexdigest()


# --------------------------------------------------------------------------- judgments


def judgment_files(dataset_dir: str | Path, split: str = "train") -> tuple[Path, Path]:
    """A BEIR dataset's ``queries.jsonl`` and ``qrels/<split>.tsv``; a clear error naming the split when one is missing."""
    root = Path(dataset_dir)
    qrels_path, queries_path = root / "qrels" / f"{split}.tsv", root / "queries.jsonl"
    for p in (queries_path, qrels_path):
        if not p.is_file():
            have = sorted(q.stem for q in (root / "qrels").glob("*.tsv")) if (root / "qrels").is_dir() else []
            raise DatasetFormatError(
                f"{p}: not found. --judgments takes a BEIR directory with queries.jsonl and qrels/<split>.tsv "
                f"(split {split!r}; choose another with --split"
                + (f": splits there: {', '.join(have)})" if have else ")")
            )
    return queries_path, qrels_path


def judged_queries(dataset_dir: str | Path, split: str = "train") -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """A dataset's queries and the ``split`` judgments (relevant documents only, grade > 0), read as ``eval``
    reads them (``tasks.datasets.load_dataset``: BEIR or TREC qrels, judged queries that the queries file lacks
    refused, TREC's zero-padded ids matched)."""
    judgment_files(dataset_dir, split)  # the --judgments wording when a file is missing
    data = load_dataset(dataset_dir, split=split)
    qrels = {q: {d: g for d, g in docs.items() if g > 0} for q, docs in data.qrels.items()}
    qrels = {q: docs for q, docs in qrels.items() if docs}
    return {q: data.queries[q] for q in qrels}, qrels


def normalized_query(text: str) -> str:
    """A query's text as compared for duplicates: case and spacing aside."""
    return " ".join(text.lower().split())


def judged_in_test(dataset_dir: str | Path, split: str, queries: dict[str, str]) -> set[str]:
    """Ids of ``queries`` (of ``split``) that the dataset's test split judges too, by id or by text: training on
    them, or gating on them, would measure the model on what it was shown. Empty for the test split itself,
    or when there is no ``qrels/test.tsv``."""
    test_path = Path(dataset_dir) / "qrels" / "test.tsv"
    if split == "test" or not test_path.is_file():
        return set()
    try:
        test = load_dataset(dataset_dir, split="test")
    except DatasetFormatError:  # a test split that cannot be read holds no query to keep apart
        return set()
    texts = {normalized_query(t) for t in test.queries.values()}
    return {q for q, t in queries.items() if q in test.queries or normalized_query(t) in texts}


def doc_paragraphs(searcher: Searcher, doc_ids: Sequence[str]) -> dict[str, list[dict]]:
    """Every paragraph of ``doc_ids`` ({doc id: rows by position}), read straight from the table."""
    if not doc_ids:
        return {}
    rows = searcher.table.to_lance().to_table(columns=["id", "doc_id", "title", "text", "position"],
                                              filter=in_list("doc_id", doc_ids)).to_pylist()
    out: dict[str, list[dict]] = {}
    for r in sorted(rows, key=lambda r: (r["doc_id"], r["position"])):
        out.setdefault(r["doc_id"], []).append(r)
    return out


def _negatives(hits: Sequence[Hit], exclude_docs: set[str], exclude_texts: set[str], encode_title: bool,
               rng: random.Random, strip_title: bool = False) -> list[str]:
    pool = []
    for h in hits:
        text = passage_text(None if strip_title else h.title, h.text, encode_title)
        if h.doc_id in exclude_docs or text in exclude_texts:
            continue
        exclude_texts.add(text)
        pool.append(text)
    # The hardest few always, the rest sampled from the remaining depth: all-hardest sets are the likeliest
    # to hold unjudged relevant paragraphs.
    keep = pool[: NEGATIVES // 2]
    rest = pool[NEGATIVES // 2:]
    keep += rng.sample(rest, min(len(rest), NEGATIVES - len(keep)))
    return keep


def examples_from_judgments(searcher: Searcher, queries: dict[str, str], qrels: dict[str, dict[str, int]],
                            seed: int = 0) -> list[Example]:
    """Judged queries → examples: positive = the best-retrieved paragraph of a relevant document."""
    rng = random.Random(seed)
    doc_ids = set(searcher.table.to_lance().to_table(columns=["doc_id"]).column("doc_id").unique().to_pylist())
    qrels = judged_as_collection(qrels, doc_ids)  # CACM-0001 → CACM-0001.html in a collection of HTML files
    qids = list(queries)
    hits_per_query = searcher.search_many([queries[q] for q in qids], k=MINING_DEPTH, mode="hybrid",
                                          candidates=MINING_DEPTH, rerank=False)
    missing = sorted({d for q in qids for d in qrels[q]} - {h.doc_id for hs in hits_per_query for h in hs})
    paragraphs = doc_paragraphs(searcher, missing)
    enc_title = searcher.meta.encode_title
    out = []
    for qid, hits in zip(qids, hits_per_query, strict=True):
        relevant = qrels[qid]
        found = next((h for h in hits if h.doc_id in relevant), None)
        if found is not None:
            positive = passage_text(found.title, found.text, enc_title)
        else:
            doc = next((d for d in relevant if d in paragraphs), None)
            if doc is None:
                continue  # no relevant document is in this collection
            first = paragraphs[doc][0]
            positive = passage_text(first["title"], first["text"], enc_title)
        negs = _negatives(hits, set(relevant), {positive}, enc_title, rng)
        out.append(Example(qid, queries[qid], "judged", positive, negs, dict(relevant)))
    if not out:
        raise TrainingDataError(
            "none of the judged documents is in this collection: --judgments must use the collection's doc ids "
            "(index the dataset's corpus into it, e.g. with corpus-search eval DATASET --collection C)"
        )
    return out


# --------------------------------------------------------------------------- self-supervised


def stable_paragraphs(searcher: Searcher, n: int, seed: int = 0) -> list[dict]:
    """``n`` paragraphs in an order fixed by a hash of the seed and each document's id: the first paragraph
    of every document in that order, then the second ones, and so on (so one long document never fills
    the draw, and the queries made from it ask for many documents).

    An index run moves this draw only by the documents it adds or removes. A uniform draw by row position
    (``sample_paragraphs``) changed whenever the row count did, so the self-supervised gate scored the
    promoted model on documents it had trained on, and ``--promote auto`` refused new models unfairly.
    """
    from tasks.records import stable_hash

    ds = searcher.table.to_lance()
    keys = ds.to_table(columns=["id", "doc_id"])
    if keys.num_rows == 0:
        raise TrainingDataError(f"collection {searcher.collection!r} is empty: index articles first")
    ids, docs = keys.column("id").to_pylist(), keys.column("doc_id").to_pylist()
    doc_rank = {d: stable_hash(str(seed), d) for d in set(docs)}
    order = sorted(range(len(ids)), key=lambda i: (doc_rank[docs[i]], ids[i]))
    nth, taken = {}, {}  # each row's place within its document
    for i in order:
        nth[i] = taken.get(docs[i], 0)
        taken[docs[i]] = nth[i] + 1
    order = sorted(order, key=lambda i: (nth[i], doc_rank[docs[i]]))[:n]
    rank = {ids[i]: k for k, i in enumerate(order)}
    rows = ds.take(sorted(order), columns=["id", "doc_id", "title", "text", "position"]).to_pylist()
    return sorted(rows, key=lambda r: rank[r["id"]])


def sample_paragraphs(searcher: Searcher, n: int, seed: int = 0) -> list[dict]:
    """``n`` paragraphs drawn uniformly from the collection (id, doc_id, title, text, position)."""
    ds = searcher.table.to_lance()
    total = ds.count_rows()
    if total == 0:
        raise TrainingDataError(f"collection {searcher.collection!r} is empty: index articles first")
    idx = sorted(random.Random(seed).sample(range(total), min(n, total)))
    return ds.take(idx, columns=["id", "doc_id", "title", "text", "position"]).to_pylist()


def _sentences(text: str) -> list[str]:
    """The sentences of ``text``, cut where ``tasks.split`` cuts them (CJK 。！？ included) and at the Devanagari,
    Urdu and Ethiopic full stops, except before a lower-case letter in text whose sentences mostly start with
    capitals: "e.g. the" is no sentence end. Text written mostly in lower case (chat logs, transcripts, with
    the odd "I ...") is cut at its full stops all the same."""
    pieces = [s for piece in split_sentences(text) for s in _MORE_ENDS.split(piece) if s]
    cased = [first.isupper() for p in pieces if (first := _first_letter(p))]
    mostly_cased = sum(cased) * 2 > len(cased)
    out: list[str] = []
    for p in pieces:
        # Before a lower-case word, a full stop ends no sentence in cased text, nor after an abbreviation in any
        # ("C. albicans", "e.g. the", "Dr. no"): either way, the piece goes on the sentence before it.
        if out and (first := _first_letter(p)) and first.islower() and (mostly_cased or _ABBREVIATION.search(out[-1])):
            out[-1] = f"{out[-1]} {p}"
        else:
            out.append(p)
    return out


def _first_letter(text: str) -> str:
    """The first character past opening quotes and brackets ('"Where', '¿Dónde', '(see'): what starts it."""
    return text.lstrip("\"'“‘«¿¡([{-–— ")[:1]


def _words(text: str) -> float:
    """How many words ``text`` holds, counting a run of unspaced script (Chinese, Japanese) by its characters."""
    unspaced = sum(len(run) for run in _UNSPACED.findall(text))
    return len(_UNSPACED.sub(" ", text).split()) + unspaced / _CHARS_PER_WORD


def _terms(text: str) -> list[str]:
    """Salient-term candidates: words of three letters or more, not function words; in unspaced script, each
    pair of characters (the usual unit of Chinese and Japanese retrieval, where no word is delimited)."""
    pairs = [run[i:i + 2] for run in _UNSPACED.findall(text) for i in range(len(run) - 1)]
    # Two Hangul syllables make a whole noun (수도, 도시), where two Latin letters make none.
    words = [w.lower() for w in _WORD.findall(_UNSPACED.sub(" ", text))
             if (len(w) > 2 or (len(w) == 2 and _HANGUL.match(w))) and w.lower() not in _STOP]
    return words + pairs


def _title_query(row: dict) -> tuple[str, str] | None:
    title = " ".join((row["title"] or "").split())
    if not 3 <= _words(title) <= 30 or title.lower() in row["text"][: len(title) + 5].lower():
        return None
    return title, row["text"]  # the title goes off the passage: see the module docstring


def _sentence_query(row: dict, rng: random.Random, enc_title: bool) -> tuple[str, str] | None:
    sents = _sentences(row["text"])
    usable = [i for i, s in enumerate(sents) if 6 <= _words(s) <= 40]
    if len(sents) < 2 or not usable:
        return None
    i = rng.choice(usable)
    rest = " ".join(sents[:i] + sents[i + 1:])
    return sents[i], passage_text(row["title"], rest, enc_title)


def _terms_query(row: dict, df: Counter, n_docs: int, rng: random.Random, enc_title: bool) -> tuple[str, str] | None:
    tf = Counter(_terms(row["text"]))
    if len(tf) < 8:
        return None
    weight = {t: c * math.log((n_docs + 1) / (df[t] + 0.5)) for t, c in tf.items()}
    top = sorted(weight, key=lambda t: (-weight[t], t))[: rng.randint(3, 5)]
    return " ".join(top), passage_text(row["title"], row["text"], enc_title)


def pseudo_queries(rows: Sequence[dict], enc_title: bool, seed: int = 0, limit: int | None = None) -> list[Example]:
    """Pseudo-queries from sampled paragraphs, the kinds in turn (a paragraph that cannot make its kind is skipped).

    ``limit``: stop at that many queries; the term weights still come from all of ``rows``.
    """
    rng = random.Random(seed)
    df: Counter = Counter()
    for r in rows:
        df.update(set(_terms(r["text"])))
    out = []
    for i, r in enumerate(rows):
        # Each paragraph tries the kind whose turn it is first, then the others, so that short paragraphs
        # (no 2 sentences, no long title) still give a query.
        for j in range(len(PSEUDO_KINDS)):
            kind = PSEUDO_KINDS[(i + j) % len(PSEUDO_KINDS)]
            if kind == "title":
                made = _title_query(r)
            elif kind == "sentence":
                made = _sentence_query(r, rng, enc_title)
            else:
                made = _terms_query(r, df, len(rows), rng, enc_title)
            if made is not None:
                out.append(Example(f"{kind}:{r['id']}", made[0], kind, made[1], [], {r["doc_id"]: 1}, r["id"]))
                break
        if limit is not None and len(out) >= limit:
            break
    return out


def pseudo_dev_queries(searcher: Searcher, rows: Sequence[dict], limit: int, seed: int = 0) -> list[Example]:
    """Held-out pseudo-queries for the gate: a sentence of one paragraph asks for the *rest of its document*.

    The sentence is verbatim in its own paragraph, so retrieval would find that paragraph trivially and
    no re-ranker could ever win. The gate therefore hides the source paragraph (``hide``) and asks for the
    document through its other paragraphs: only documents with at least two paragraphs qualify.
    """
    rng = random.Random(seed)
    counts = {d: len(ps) for d, ps in doc_paragraphs(searcher, sorted({r["doc_id"] for r in rows})).items()}
    out = []
    for r in rows:
        if counts.get(r["doc_id"], 0) < 2:
            continue
        made = _sentence_query(r, rng, False)
        if made is not None:
            out.append(Example(f"dev:{r['id']}", made[0], "sentence", "", [], {r["doc_id"]: 1}, r["id"]))
        if len(out) >= limit:
            break
    return out


def add_hard_negatives(searcher: Searcher, examples: list[Example], seed: int = 0) -> list[Example]:
    """Fill each pseudo-query's negatives from the collection's hybrid top-k (see the module docstring)."""
    rng = random.Random(seed)
    hits_per_query = searcher.search_many([e.query for e in examples], k=MINING_DEPTH, mode="hybrid",
                                          candidates=MINING_DEPTH, rerank=False)
    enc_title = searcher.meta.encode_title
    for ex, hits in zip(examples, hits_per_query, strict=True):
        ex.negatives = _negatives(hits, set(ex.relevant), {ex.positive}, enc_title, rng, strip_title=ex.kind == "title")
    return examples


def fill_negatives(examples: list[Example], seed: int = 0) -> list[Example]:
    """Top up examples that found fewer than NEGATIVES hard negatives with other examples' positives.

    Every example then has the same number of columns, which the trainer's listwise loss needs. Examples
    of tiny collections, where even random positives run out, are dropped.
    """
    rng = random.Random(seed)
    kept = []
    for ex in examples:
        need = NEGATIVES - len(ex.negatives)
        if need <= 0:
            kept.append(ex)
            continue
        # Never a positive of a document relevant to this query (self-supervised: its own document's
        # other paragraphs; judged: another query's positive from one of its relevant documents).
        others = [e.positive for e in examples if e.positive != ex.positive and e.positive not in ex.negatives
                  and not ex.relevant.keys() & e.relevant.keys()]
        if need > len(others):
            continue
        ex.negatives = ex.negatives + rng.sample(others, need)
        kept.append(ex)
    return kept
