"""Pure loaders of evaluation data: BEIR corpus/queries/qrels and TREC topics/qrels.

Every malformed line raises ``DatasetFormatError`` naming the file and the line number, so a bad
test collection fails loudly instead of silently scoring fewer queries.

Formats:
- BEIR: ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``, ``text``),
  ``qrels/{split}.tsv`` (``query-id  corpus-id  score``, with a header line).
- TREC topics: classic ``<top><num> Number: 51 <title> ...</top>`` (the title is the query), or the
  ``<DOC><DOCNO> 1 </DOCNO> text </DOC>`` form of CACM (the whole text is the query), or a two-column
  ``qid<TAB>text`` file (Anserini's ``.tsv`` topics).
- TREC qrels: ``qid iter docid rel``, whitespace separated.
"""

from __future__ import annotations

import gzip
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from query.errors import CorpusSearchError
from tasks.text import open_text

Qrels = dict[str, dict[str, int]]  # query id -> doc id -> relevance grade


class DatasetFormatError(CorpusSearchError, ValueError):
    """A malformed line or file in an evaluation data set; the message names ``file:line``."""


def _open(path: Path) -> io.TextIOBase:
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(f"{path}: no such file")
    return open_text(path, errors="strict")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    with _open(path) as fh:
        try:
            yield from enumerate(fh, start=1)
        except UnicodeDecodeError:
            raise _not_utf8(path) from None


def _head(path: Path, read) -> str:
    """What ``read`` takes from the start of ``path`` (to tell its format), a decoding error said as such."""
    with _open(path) as fh:
        try:
            return read(fh)
        except UnicodeDecodeError:
            raise _not_utf8(path) from None


def _not_utf8(path: Path) -> DatasetFormatError:
    """The error for a file that is not UTF-8, naming its first bad line (text is decoded in blocks, so the
    line being read when decoding failed may be an earlier one: the file is read again, line by line)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return _fail(path, lineno, f"not UTF-8 (byte 0x{raw[exc.start]:02x}): convert the file, e.g. "
                                           f"iconv -f latin1 -t utf-8 {path} > fixed && mv fixed {path}")
    return DatasetFormatError(f"{path}: not UTF-8: convert it, e.g. with iconv -f latin1 -t utf-8")


def _fail(path: Path, lineno: int, msg: str) -> DatasetFormatError:
    return DatasetFormatError(f"{path}:{lineno}: {msg}")


# --------------------------------------------------------------------------- BEIR


def _json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _fail(path, lineno, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise _fail(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def _field(path: Path, lineno: int, obj: dict, key: str) -> str:
    value = obj.get(key)
    if value is None or (isinstance(value, str) and key == "_id" and not value.strip()):
        raise _fail(path, lineno, f"missing {key!r}")
    if not isinstance(value, (str, int)):
        raise _fail(path, lineno, f"{key!r} must be a string, got {type(value).__name__}")
    return str(value)


def load_beir_corpus(path: str | Path) -> dict[str, tuple[str, str]]:
    """``corpus.jsonl`` → {doc id: (title, text)}. Duplicate ids are an error."""
    path = Path(path)
    out: dict[str, tuple[str, str]] = {}
    for lineno, obj in _json_lines(path):
        doc_id = _field(path, lineno, obj, "_id")
        if doc_id in out:
            raise _fail(path, lineno, f"duplicate _id {doc_id!r}")
        out[doc_id] = (str(obj.get("title") or ""), _field(path, lineno, obj, "text"))
    return out


def load_beir_queries(path: str | Path) -> dict[str, str]:
    """``queries.jsonl`` → {query id: text}, in file order."""
    path = Path(path)
    out: dict[str, str] = {}
    for lineno, obj in _json_lines(path):
        qid = _field(path, lineno, obj, "_id")
        text = _field(path, lineno, obj, "text")
        if not text.strip():
            raise _fail(path, lineno, f"query {qid!r} has an empty 'text'")
        if qid in out:
            raise _fail(path, lineno, f"duplicate query _id {qid!r}")
        out[qid] = text
    return out


_INTEGER = re.compile(r"-?\d+(\.0*)?")


def _grade(path: Path, lineno: int, value: str) -> int:
    if not _INTEGER.fullmatch(value):
        raise _fail(path, lineno, f"relevance {value!r} is not an integer")
    return int(float(value))


class _Judgments:
    """Qrels being read: a (query, document) pair judged twice keeps its higher grade, and the loader says so
    (trec_eval's readers keep one of them, silently: a pair judged 2 then 0 scored as unjudged)."""

    def __init__(self, path: Path) -> None:
        self.path, self.qrels, self.lines = path, {}, {}
        self.conflicts: list[str] = []

    def add(self, qid: str, doc: str, grade: int, lineno: int) -> None:
        docs = self.qrels.setdefault(qid, {})
        if doc in docs and docs[doc] != grade:
            self.conflicts.append(f"{qid} {doc}: {docs[doc]} on line {self.lines[qid, doc]}, {grade} on line {lineno}")
            if grade < docs[doc]:
                return
        docs[doc] = grade
        self.lines[qid, doc] = lineno

    def done(self, notes: list[str] | None) -> Qrels:
        if self.conflicts and notes is not None:
            notes.append(f"{self.path}: {len(self.conflicts)} (query, document) pairs are judged twice with different "
                         f"grades; the higher grade is kept (e.g. {'; '.join(self.conflicts[:3])})")
        return self.qrels


#: Words a qrels header's grade column is named with ("score", "relevance_score", "judged", "Grade").
_GRADE_WORDS = ("score", "rel", "label", "grade", "judg", "qrel")


def _is_header(parts: list[str]) -> bool:
    """Whether a first line of three fields names columns: a grade column that is no number, and either a
    grade word in its name or no digit anywhere (ids have them: "q1 d1 yes" is a judgment with a bad grade)."""
    grade = parts[2].strip().lower()
    if any(c.isdigit() for c in grade):
        return False
    return any(w in grade for w in _GRADE_WORDS) or not any(c.isdigit() for p in parts for c in p)


def _tab_fields(line: str) -> list[str]:
    """A tab-separated line's fields, trailing empty ones (a tab at the end of the line) dropped."""
    return line.rstrip("\r\n").rstrip("\t").split("\t")


def load_beir_qrels(path: str | Path, notes: list[str] | None = None) -> Qrels:
    """``qrels/<split>.tsv`` (``query-id  corpus-id  score``, header optional) → {qid: {docid: grade}}.

    ``notes`` hears of pairs judged twice with different grades (the higher one is kept)."""
    path = Path(path)
    judged = _Judgments(path)
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        parts = _tab_fields(line)
        if len(parts) != 3:
            parts = line.split()
        if lineno == 1 and len(parts) == 3 and _is_header(parts):
            continue  # a header line: BEIR's, or another that names its columns ("qid docid rel")
        if len(parts) != 3:
            raise _fail(path, lineno, f"expected 3 tab-separated columns (query-id, corpus-id, score), got {len(parts)}")
        qid, doc, score = (p.strip() for p in parts)
        if not qid or not doc:
            raise _fail(path, lineno, "empty query-id or corpus-id")
        judged.add(qid, doc, _grade(path, lineno, score), lineno)
    return judged.done(notes)


# --------------------------------------------------------------------------- TREC

_TAG = re.compile(r"<(/?)(top|num|title|desc|narr|doc|docno)>", re.IGNORECASE)


def _strip_label(text: str, labels: tuple[str, ...]) -> str:
    text = " ".join(text.split())
    for label in labels:
        if text.lower().startswith(label.lower()):
            return text[len(label):].strip()
    return text


def load_trec_topics(path: str | Path, *, field: str = "title") -> dict[str, str]:
    """TREC topics → {query id: text}. ``field`` picks ``title`` or ``desc`` of ``<top>`` topics.

    Understands ``<top>`` topics, CACM-style ``<DOC><DOCNO>`` topics, and ``qid<TAB>text`` files.
    """
    path = Path(path)
    if field not in ("title", "desc"):
        raise ValueError(f"field must be 'title' or 'desc', got {field!r}")
    lines = list(_lines(path))
    text = "".join(line for _, line in lines)
    if not _TAG.search(text):
        return _tsv_topics(path, lines)
    topics: dict[str, str] = {}
    block: str | None = None  # "top" or "doc" while inside one
    start = 0
    buf: list[str] = []
    for lineno, line in lines:
        low = line.lower()
        opens = re.search(r"<(top|doc)>", low)
        if opens:
            if block is not None:
                raise _fail(path, lineno, f"<{opens.group(1)}> opened before <{block}> of line {start} was closed")
            block, start, buf = opens.group(1), lineno, [line[opens.end():]]
            closes_here = re.search(rf"</{block}>", low[opens.end():])
            if not closes_here:
                continue
            buf = [line[opens.end(): opens.end() + closes_here.start()]]
        elif block is None:
            if line.strip():
                raise _fail(path, lineno, f"text outside any <top> or <DOC> block: {line.strip()[:60]!r}")
            continue
        else:
            close = re.search(rf"</{block}>", low)
            if not close:
                buf.append(line)
                continue
            buf.append(line[: close.start()])
        qid, query = (_parse_top if block == "top" else _parse_doc)(path, start, "".join(buf), field)
        if qid in topics:
            raise _fail(path, start, f"duplicate topic number {qid!r}")
        topics[qid] = query
        block, buf = None, []
    if block is not None:
        raise _fail(path, start, f"<{block}> is never closed")
    if not topics:
        raise DatasetFormatError(f"{path}: no topics found")
    return topics


def _section(body: str, tag: str) -> str | None:
    """Text after ``<tag>`` up to the next tag (TREC topic tags are not closed)."""
    m = re.search(rf"<{tag}>(.*?)(?=<[a-z/]+>|\Z)", body, re.IGNORECASE | re.DOTALL)
    return m.group(1) if m else None


def _parse_top(path: Path, start: int, body: str, field: str) -> tuple[str, str]:
    num = _section(body, "num")
    if num is None or not _strip_label(num, ("Number:",)):
        raise _fail(path, start, "<top> without a <num>")
    qid = _strip_label(num, ("Number:",)).split()[0]
    qid = qid.lstrip("0") or qid
    text = _section(body, field)
    if text is None or not _strip_label(text, ("Topic:", "Description:")):
        raise _fail(path, start, f"topic {qid} has no <{field}>")
    return qid, _strip_label(text, ("Topic:", "Description:"))


def _parse_doc(path: Path, start: int, body: str, field: str) -> tuple[str, str]:
    m = re.search(r"<docno>(.*?)</docno>", body, re.IGNORECASE | re.DOTALL)
    if not m or not m.group(1).strip():
        raise _fail(path, start, "<DOC> without a <DOCNO>")
    qid = m.group(1).strip()
    text = " ".join(body[m.end():].split())
    if not text:
        raise _fail(path, start, f"topic {qid} has no text")
    return qid, text


def _tsv_topics(path: Path, lines: list[tuple[int, str]]) -> dict[str, str]:
    topics: dict[str, str] = {}
    for lineno, line in lines:
        if not line.strip():
            continue
        parts = line.rstrip("\n").split("\t", 1)
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise _fail(path, lineno, "expected 'qid<TAB>query text' (or <top>/<DOC> topics)")
        topics[parts[0].strip()] = " ".join(parts[1].split())
    if not topics:
        raise DatasetFormatError(f"{path}: no topics found")
    return topics


def load_trec_qrels(path: str | Path, notes: list[str] | None = None) -> Qrels:
    """TREC qrels (``qid iter docid rel``) → {qid: {docid: grade}} (``notes``: see ``load_beir_qrels``)."""
    path = Path(path)
    judged = _Judgments(path)
    for lineno, line in _lines(path):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 4:
            raise _fail(path, lineno, f"expected 4 columns 'qid iter docid rel', got {len(parts)}")
        qid, _, doc, rel = parts
        judged.add(qid, doc, _grade(path, lineno, rel), lineno)
    return judged.done(notes)


# --------------------------------------------------------------------------- formats by sniffing


def load_queries(path: str | Path, *, field: str = "title") -> dict[str, str]:
    """Queries of any supported format: BEIR ``queries.jsonl`` or TREC topics."""
    path = Path(path)
    head = _head(path, lambda fh: fh.read(4096)).lstrip()
    return load_beir_queries(path) if head.startswith("{") else load_trec_topics(path, field=field)


def load_qrels(path: str | Path, notes: list[str] | None = None) -> Qrels:
    """Qrels of either format: BEIR tsv (3 columns) or TREC (4 columns) (``notes``: see ``load_beir_qrels``)."""
    path = Path(path)
    first = _head(path, lambda fh: next((line for line in fh if line.strip()), ""))
    # Tabs decide when there are any: a BEIR corpus-id may hold spaces ("doc 02"), which a split on
    # whitespace would count as a fourth column and read as TREC (every doc id then wrong, every metric 0).
    tabbed = _tab_fields(first)
    columns = len(tabbed) if len(tabbed) > 1 else len(first.split())
    return load_trec_qrels(path, notes) if columns == 4 else load_beir_qrels(path, notes)


@dataclass
class EvalDataset:
    """A test collection: where its corpus is, its queries (only those judged in the split) and qrels."""

    name: str
    root: Path
    corpus: Path | None
    queries: dict[str, str]
    qrels: Qrels
    split: str = "test"
    unjudged_queries: int = 0  # queries in the queries file with no judgements in this split
    notes: list[str] = field(default_factory=list)


def load_dataset(
    root: str | Path,
    *,
    split: str = "test",
    queries: str | Path | None = None,
    qrels: str | Path | None = None,
) -> EvalDataset:
    """Load a BEIR-layout directory (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``).

    ``queries`` / ``qrels`` override the files (TREC topics and qrels work too). Only queries with
    judgements in the split are kept (BEIR: SciFact test = 300 queries); qrels of unknown queries are
    an error.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetFormatError(f"{root}: not a directory (expected a BEIR layout: corpus.jsonl, queries.jsonl, qrels/)")
    corpus = next((root / n for n in ("corpus.jsonl", "corpus.jsonl.gz") if (root / n).is_file()), None)
    qpath = Path(queries) if queries else root / "queries.jsonl"
    rpath = Path(qrels) if qrels else root / "qrels" / f"{split}.tsv"
    if qrels and not rpath.is_file():
        raise DatasetFormatError(f"{rpath}: no such file (given as the qrels)")
    if not rpath.is_file():
        have = sorted(p.stem for p in (root / "qrels").glob("*.tsv")) if (root / "qrels").is_dir() else []
        raise DatasetFormatError(f"{rpath}: no qrels for split {split!r}" + (f" (splits there: {', '.join(have)})" if have else ""))
    all_queries = load_queries(qpath)
    notes: list[str] = []
    judged = load_qrels(rpath, notes)
    if unmatched := set(judged) - set(all_queries):
        # TREC writes topic 51 as "Number: 051" in one file and "51" in the other, and either may keep the
        # zero: a judged id matches the query whose number is the same, when every unmatched one does, no two
        # queries share a number, and the judgments merged into one query never disagree. Numbers only: "0a1"
        # and "a1" are two names.
        def number(q: str) -> str:
            return (q.lstrip("0") or q) if q.isdigit() else q

        numbers: dict[str, list[str]] = {}
        for q in all_queries:
            numbers.setdefault(number(q), []).append(q)
        same = {q: numbers.get(number(q), []) for q in unmatched}
        if all(len(v) == 1 for v in same.values()):
            merged: Qrels = {}
            agree = True
            for q, docs in judged.items():
                into = merged.setdefault(same[q][0] if q in same else q, {})
                for d, grade in docs.items():
                    agree &= into.setdefault(d, grade) == grade
            if agree:
                judged = merged
    missing = sorted(set(judged) - set(all_queries))
    if missing:
        raise DatasetFormatError(f"{rpath}: {len(missing)} judged queries are not in {qpath} (e.g. {missing[:3]})")
    if not any(grade > 0 for docs in judged.values() for grade in docs.values()):
        # Every metric would be 0 or NaN, found only after indexing the whole corpus.
        raise DatasetFormatError(f"{rpath}: no relevant judgments (no line with a grade above 0) for split {split!r}")
    kept = {q: t for q, t in all_queries.items() if q in judged}
    return EvalDataset(root.resolve().name, root, corpus, kept, judged, split, len(all_queries) - len(kept), notes)


def default_collection(dataset_name: str, unit: str) -> str:
    """The collection ``eval`` indexes a dataset into when none is given (the failure hook names it too)."""
    return f"eval-{dataset_name}" + ("-document" if unit == "document" else "")


def html_doc_id(doc_id: str) -> str:
    """Directory-source doc id (relative path) → the collection's own id: ``CACM-0001.html`` → ``CACM-0001``."""
    from tasks.fetch import LOCAL_SUFFIXES

    p = PurePosixPath(doc_id)
    return str(p.with_suffix("")) if p.suffix.lower() in LOCAL_SUFFIXES else doc_id


def judged_id(doc_id: str, known: set[str] | frozenset[str]) -> str:
    """The dataset id a collection's ``doc_id`` names, for scoring against judgments that use ``known`` ids:
    itself, or its file name without the extension (``CACM-0001.html``), or that under fewer folders
    (``pages/A-1.html`` of an archive's one folder: ``A-1``). An id that names none of them is returned as
    ``html_doc_id`` gives it: unjudged, so not relevant, whatever it is called."""
    if doc_id in known:
        return doc_id
    stem = html_doc_id(doc_id)
    parts = stem.split("/")
    for i in range(len(parts)):
        if (tail := "/".join(parts[i:])) in known:
            return tail
    return stem


def judged_as_collection(qrels: dict[str, dict[str, int]], doc_ids: set[str]) -> dict[str, dict[str, int]]:
    """``qrels`` keyed by the collection's own doc ids: a corpus indexed from a folder of files keys its
    documents by file name (``CACM-0001.html``, or ``pages/CACM-0001.html`` under an archive's folder) where its
    judgments name ``CACM-0001``: each collection id stands for the judged id ``judged_id`` finds for it, as
    ``eval`` scores them. Ids the collection holds as they are stay unchanged."""
    known = {d for docs in qrels.values() for d in docs}
    to_collection: dict[str, str] = {}
    for d in doc_ids:
        if d not in known and (j := judged_id(d, known)) in known:
            to_collection.setdefault(j, d)
    if not to_collection:
        return qrels
    return {q: {(d if d in doc_ids else to_collection.get(d, d)): g for d, g in docs.items()} for q, docs in qrels.items()}
