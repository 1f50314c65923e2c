"""Documents from a text corpus, streamed in a fixed order, and the next-token-reasoning samples cut from
their token ids (Sections 3.1 and 3.3 of the paper).

Formats, chosen by file extension (any case; `.jsonl`, `.json` and `.txt` may be gzipped: `.jsonl.gz`):
- `.jsonl`: one JSON object per line; the chosen text fields (OmniMATH: `problem`, `solution`) are joined
  with a blank line.
- `.json`: a JSON array of such objects (sources are `file:index`, 1-based; the array is read whole), or,
  when the file does not start with `[`, JSON lines as above.
- `.parquet`: one row per document, same fields; read batch by batch with pyarrow.
- `.txt`: documents separated by a line holding only `<|endoftext|>` (the TinyStories / GPT-2 dump
  convention); a file without a separator is one document.
A directory stands for every file with these extensions below it, in the order of their relative paths;
`list_corpus_files` lists the other files it skipped and why. Nothing but a `.json` array is held in memory
beyond the current record, so a corpus larger than memory streams.

Bad records are skipped, never silently: each is counted by kind and remembered with its `file:line`
(parquet: `file:row`, 1-based) in a `BadRecordReport`; `check()` turns too many of them into an error.
Exact duplicates of an earlier document's text are skipped too and reported under their own kind, so that
the held-out split cannot leak into training (OmniMATH-Rule has 5 duplicated rows); they do not count as bad.

Deviation from the paper: none in substance; the paper does not say how problem and solution are joined.
"""
import gzip
import hashlib
import json
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from rpt.data.sample import Sample

CORPUS_SUFFIXES = (".jsonl", ".json", ".parquet", ".txt", ".jsonl.gz", ".json.gz", ".txt.gz")
TXT_DOC_SEPARATOR = "<|endoftext|>"
# Kinds of skipped records; the last one is not an error (see module docstring). `unreadable_file`: a file
# whose bytes stop making sense mid-way (a truncated .gz, a damaged parquet); the records before it are kept.
BAD_KINDS = ("invalid_utf8", "lone_surrogate", "invalid_json", "not_an_object", "missing_field", "field_not_text",
             "empty_text", "oversize", "unreadable_file")
DUPLICATE_KIND = "duplicate"


@dataclass
class Document:
    doc_id: int  # index among the kept documents, in corpus order
    text: str
    source: str  # "file:line" of the record it came from


@dataclass
class BadRecordReport:
    """What was skipped while reading a corpus: counts by kind and every record's `file:line`."""

    records_read: int = 0
    counts: Counter = field(default_factory=Counter)
    entries: list[tuple[str, str, str]] = field(default_factory=list)  # (file:line, kind, detail)

    def add(self, source: str, kind: str, detail: str = "") -> None:
        self.counts[kind] += 1
        self.entries.append((source, kind, detail))

    @property
    def num_bad(self) -> int:
        return sum(n for kind, n in self.counts.items() if kind != DUPLICATE_KIND)

    def format(self, max_lines: int = 200) -> str:
        """A readable report: one line per kind, then one line per skipped record (up to max_lines)."""
        lines = [f"read {self.records_read} records, skipped {self.num_bad} bad and "
                 f"{self.counts[DUPLICATE_KIND]} duplicate"]
        lines += [f"  {kind}: {n}" for kind, n in sorted(self.counts.items())]
        lines += [f"  {source}: {kind}{' (' + detail + ')' if detail else ''}"
                  for source, kind, detail in self.entries[:max_lines]]
        if len(self.entries) > max_lines:
            lines.append(f"  ... and {len(self.entries) - max_lines} more")
        return "\n".join(lines)

    def check(self, max_bad_fraction: float) -> None:
        """Raise if more than max_bad_fraction of the records read were bad (duplicates excluded)."""
        if self.records_read and self.num_bad > max_bad_fraction * self.records_read:
            raise ValueError(f"{self.num_bad} of {self.records_read} records are bad, more than the allowed "
                             f"fraction {max_bad_fraction}:\n{self.format()}")

    def to_dict(self) -> dict:
        return {"records_read": self.records_read, "counts": dict(sorted(self.counts.items())),
                "entries": [list(entry) for entry in self.entries]}


def corpus_format(path: Path) -> str | None:
    """The entry of CORPUS_SUFFIXES that `path` ends with, case-insensitively (None: not a corpus file)."""
    name = path.name.lower()
    return next((suffix for suffix in sorted(CORPUS_SUFFIXES, key=len, reverse=True) if name.endswith(suffix)), None)


def list_corpus_files(paths: list[str | Path], skipped: list[tuple[Path, str]] | None = None) -> list[Path]:
    """Expand directories into the corpus files below them (recursively, ordered by relative path); keep the
    order of the given paths. Files a directory holds that are not read are appended to `skipped` as
    (path, reason)."""
    skipped = skipped if skipped is not None else []
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            for child in sorted((p for p in path.rglob("*") if p.is_file()), key=lambda p: p.relative_to(path).parts):
                if any(part.startswith(".") for part in child.relative_to(path).parts):
                    skipped.append((child, "hidden"))
                elif corpus_format(child) is None:
                    skipped.append((child, f"not a corpus format (expected one of {', '.join(CORPUS_SUFFIXES)})"))
                else:
                    files.append(child)
        elif corpus_format(path) is not None:
            if not path.is_file():
                raise FileNotFoundError(f"corpus file not found: {path}")
            files.append(path)
        else:
            raise ValueError(f"unknown corpus format for {path} (expected one of {CORPUS_SUFFIXES})")
    if not files:
        raise ValueError(f"no corpus files in {paths}")
    return files


def file_digest(path: Path) -> str:
    """BLAKE2b of a file's bytes: the corpus's identity when a killed prepare run resumes."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as file:
        while block := file.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def read_documents(paths: list[str | Path], fields: tuple[str, ...] = ("problem", "solution"),
                   max_record_bytes: int = 1 << 20, report: BadRecordReport | None = None,
                   drop_duplicates: bool = True, txt_separator: str = TXT_DOC_SEPARATOR) -> Iterator[Document]:
    """Stream the corpus's good documents in a deterministic order (files as given, records in file order).

    fields: the jsonl/parquet fields whose text is joined with a blank line (ignored for .txt).
    max_record_bytes: a record larger than this (UTF-8 bytes) is skipped as `oversize`, read in pieces.
    report: receives every skipped record; pass one in to read it afterwards.
    """
    report = report if report is not None else BadRecordReport()
    seen_hashes: set[bytes] = set()
    doc_id = 0
    for path in list_corpus_files(paths):
        for source, text, kind, detail in _read_records(path, fields, max_record_bytes, txt_separator):
            report.records_read += 1
            if kind is None and not text.strip():
                kind = "empty_text"
            if kind is None:
                try:
                    encoded = text.encode("utf-8")
                except UnicodeEncodeError as error:  # JSON's "\ud800" escape decodes to a lone surrogate
                    kind, detail = "lone_surrogate", f"character {error.start} of the text"
            if kind is not None:
                report.add(source, kind, detail)
                continue
            digest = hashlib.blake2b(encoded, digest_size=16).digest()
            if drop_duplicates and digest in seen_hashes:
                report.add(source, DUPLICATE_KIND)
                continue
            seen_hashes.add(digest)
            yield Document(doc_id, text, source)
            doc_id += 1


# Each reader yields (source, text, bad_kind, detail); bad_kind is None for a good record.
RecordTuple = tuple[str, str, str | None, str]


def _open(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _read_records(path: Path, fields, max_record_bytes: int, separator: str) -> Iterator[RecordTuple]:
    """The records of one file; a file that breaks off mid-way ends with one `unreadable_file` record."""
    readers = {".jsonl": _read_jsonl, ".json": _read_json, ".parquet": _read_parquet, ".txt": _read_txt}
    kind = corpus_format(path).removesuffix(".gz")
    count = 0
    try:
        for record in readers[kind](path, fields, max_record_bytes, separator):
            count += 1
            yield record
    except (OSError, EOFError, zlib.error, pa.ArrowException) as error:
        yield f"{path}:{count + 1}", "", "unreadable_file", f"{type(error).__name__}: {error}"


def _join_fields(record, fields: tuple[str, ...]) -> tuple[str, str | None, str]:
    if not isinstance(record, dict):
        return "", "not_an_object", type(record).__name__
    missing = [name for name in fields if name not in record]
    if missing:
        return "", "missing_field", ",".join(missing)
    not_text = [name for name in fields if not isinstance(record[name], str)]
    if not_text:
        return "", "field_not_text", ",".join(not_text)
    return "\n\n".join(record[name] for name in fields), None, ""


def read_records(path: Path, columns: tuple[str, ...], max_record_bytes: int
                 ) -> Iterator[tuple[str, object, str | None, str]]:
    """The raw records of a .jsonl or .parquet file -> (source, record, bad_kind, detail), record None for a
    bad one. Parquet rows hold only `columns` (top-level names), and a row missing one is `missing_field`;
    a parquet row larger than max_record_bytes is left to the caller (its size is known only once joined)."""
    if path.suffix == ".jsonl":
        yield from _read_jsonl_records(path, max_record_bytes)
    elif path.suffix == ".parquet":
        yield from _read_parquet_records(path, columns)
    else:
        raise ValueError(f"{path}: records are read from .jsonl or .parquet files, not '{path.suffix}'")


def _read_jsonl_records(path: Path, max_record_bytes: int) -> Iterator[tuple[str, object, str | None, str]]:
    with _open(path) as file:
        line_number = 0
        while True:
            line = file.readline(max_record_bytes + 2)
            if not line:
                return
            line_number += 1
            source = f"{path}:{line_number}"
            if len(line.rstrip(b"\n")) > max_record_bytes:
                while line and not line.endswith(b"\n"):  # skip the rest of the oversize line unread
                    line = file.readline(1 << 20)
                yield source, None, "oversize", f"> {max_record_bytes} bytes"
                continue
            if not line.strip():
                continue  # blank lines between records are not records
            try:
                decoded = line.decode("utf-8")
            except UnicodeDecodeError as error:
                yield source, None, "invalid_utf8", f"byte {error.start}"
                continue
            try:
                record = json.loads(decoded)
            except json.JSONDecodeError as error:
                yield source, None, "invalid_json", error.msg
                continue
            yield source, record, None, ""


def _read_parquet_records(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[str, object, str | None, str]]:
    parquet_file = pq.ParquetFile(path)
    missing = [name for name in columns if name not in parquet_file.schema_arrow.names]
    row_number = 0
    for batch in parquet_file.iter_batches(batch_size=1024, columns=[c for c in columns if c not in missing]):
        for record in batch.to_pylist():
            row_number += 1
            if missing:
                yield f"{path}:{row_number}", None, "missing_field", ",".join(missing)
            else:
                yield f"{path}:{row_number}", record, None, ""


def _read_json(path: Path, fields, max_record_bytes: int, separator: str) -> Iterator[RecordTuple]:
    with _open(path) as file:
        head = file.read(4096).lstrip()
    if not head.startswith(b"["):
        yield from _read_jsonl(path, fields, max_record_bytes, separator)
        return
    with _open(path) as file:
        try:
            records = json.loads(file.read().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            yield f"{path}:1", "", "invalid_json", f"the array does not parse: {error}"
            return
    for index, record in enumerate(records, start=1):
        text, kind, detail = _join_fields(record, fields)
        if kind is None and len(text.encode("utf-8", "surrogatepass")) > max_record_bytes:
            kind, detail = "oversize", f"> {max_record_bytes} bytes"
        yield f"{path}:{index}", text, kind, detail


def _read_jsonl(path: Path, fields, max_record_bytes: int, separator: str) -> Iterator[RecordTuple]:
    for source, record, kind, detail in _read_jsonl_records(path, max_record_bytes):
        yield (source, "", kind, detail) if kind else (source, *_join_fields(record, fields))


def _read_parquet(path: Path, fields, max_record_bytes: int, separator: str) -> Iterator[RecordTuple]:
    for source, record, kind, detail in _read_parquet_records(path, tuple(fields)):
        if kind is None:
            text, kind, detail = _join_fields(record, fields)
            if kind is None and len(text.encode("utf-8")) > max_record_bytes:
                kind, detail = "oversize", f"> {max_record_bytes} bytes"
            yield source, text, kind, detail
        else:
            yield source, "", kind, detail


def _read_txt(path: Path, fields, max_record_bytes: int, separator: str) -> Iterator[RecordTuple]:
    def finish(start_line: int, pieces: list[bytes], size: int) -> RecordTuple | None:
        if size > max_record_bytes:
            return f"{path}:{start_line}", "", "oversize", f"> {max_record_bytes} bytes"
        raw = b"".join(pieces)
        if not raw.strip():
            return None  # nothing between two separators (or after the last one): not a record
        try:
            return f"{path}:{start_line}", raw.decode("utf-8").strip("\n"), None, ""
        except UnicodeDecodeError as error:
            return f"{path}:{start_line}", "", "invalid_utf8", f"byte {error.start}"

    separator_bytes = separator.encode("utf-8")
    pieces, size, start_line = [], 0, 1
    with _open(path) as file:
        for line_number, line in enumerate(file, start=1):
            if line.rstrip(b"\r\n") == separator_bytes:
                record = finish(start_line, pieces, size)
                if record:
                    yield record
                pieces, size, start_line = [], 0, line_number + 1
                continue
            if not pieces and not line.strip() and size == 0:
                start_line = line_number + 1  # a document starts at its first non-blank line
                continue
            size += len(line)
            if size <= max_record_bytes:  # an oversize document is counted, not kept in memory
                pieces.append(line)
    record = finish(start_line, pieces, size)
    if record:
        yield record


def make_sample(token_ids, position: int, max_context: int, continuation_tokens: int | None, doc_id: int,
                entropy: float | None = None) -> Sample:
    """The sample at position t of a document: context x_<t left-truncated to max_context tokens, and the
    ground-truth continuation x_>=t: the rest of the document (Eq. 3's x_>=t) when continuation_tokens is
    None, else capped at x_t .. x_{t+k-1} (shorter at the end of the document)."""
    if not 0 < position < len(token_ids):
        raise ValueError(f"position {position} outside (0, {len(token_ids)})")
    context = token_ids[max(0, position - max_context):position]
    stop = len(token_ids) if continuation_tokens is None else position + continuation_tokens
    continuation = token_ids[position:stop]
    return Sample(doc_id=doc_id, position=position, context_ids=[int(i) for i in context],
                  continuation_ids=[int(i) for i in continuation], entropy=entropy)
