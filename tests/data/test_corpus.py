import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rpt.data.corpus import BadRecordReport, list_corpus_files, make_sample, read_documents


def write_planted_jsonl(path, oversize_bytes=200):
    """A jsonl corpus with one bad record of every kind; returns the expected good texts and bad lines."""
    lines = [
        json.dumps({"problem": "P1", "solution": "S1"}).encode(),  # 1 good
        b'{"problem": "P2", "solution": ',  # 2 invalid json
        json.dumps({"problem": "P3"}).encode(),  # 3 missing field
        b"",  # 4 blank: not a record
        json.dumps({"problem": "P5", "solution": None}).encode(),  # 5 field not text
        json.dumps({"problem": " ", "solution": "\n"}).encode(),  # 6 empty text
        b'{"problem": "P7 \xff\xfe", "solution": "S7"}',  # 7 invalid utf-8
        json.dumps({"problem": "x" * oversize_bytes, "solution": "S8"}).encode(),  # 8 oversize
        json.dumps(["not", "an", "object"]).encode(),  # 9 not an object
        json.dumps({"problem": "P1", "solution": "S1"}).encode(),  # 10 duplicate of line 1
        json.dumps({"problem": "Löse $x^2=4$", "solution": "x = ±2 {}"}, ensure_ascii=False).encode(),  # 11 good
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    good = ["P1\n\nS1", "Löse $x^2=4$\n\nx = ±2 {}"]
    bad = {2: "invalid_json", 3: "missing_field", 5: "field_not_text", 6: "empty_text", 7: "invalid_utf8",
           8: "oversize", 9: "not_an_object", 10: "duplicate"}
    return good, bad


def test_jsonl_skips_and_reports_every_bad_record(tmp_path):
    path = tmp_path / "corpus.jsonl"
    good, bad = write_planted_jsonl(path)
    report = BadRecordReport()
    documents = list(read_documents([path], max_record_bytes=100, report=report))
    assert [d.text for d in documents] == good
    assert [d.doc_id for d in documents] == [0, 1]
    assert [d.source for d in documents] == [f"{path}:1", f"{path}:11"]
    assert [(source, kind) for source, kind, _ in report.entries] == [(f"{path}:{n}", k) for n, k in bad.items()]
    assert report.records_read == 10  # the blank line is not a record
    assert report.num_bad == 7 and report.counts["duplicate"] == 1
    text = report.format()
    for line, kind in bad.items():
        assert f"{path}:{line}: {kind}" in text
    report.check(max_bad_fraction=0.7)
    with pytest.raises(ValueError, match="7 of 10 records are bad"):
        report.check(max_bad_fraction=0.5)


def test_oversize_jsonl_line_is_skipped_without_losing_the_next_record(tmp_path):
    path = tmp_path / "corpus.jsonl"
    lines = [json.dumps({"problem": "a" * 5000, "solution": "b"}), json.dumps({"problem": "c", "solution": "d"})]
    path.write_text("\n".join(lines))  # no final newline
    report = BadRecordReport()
    assert [d.text for d in read_documents([path], max_record_bytes=64, report=report)] == ["c\n\nd"]
    assert report.entries[0][:2] == (f"{path}:1", "oversize")


def test_txt_documents_split_on_separator(tmp_path):
    path = tmp_path / "stories.txt"
    path.write_bytes(b"Once upon a time.\nThe end.\n<|endoftext|>\n\nSecond story.\n<|endoftext|>\n"
                     b"<|endoftext|>\nbad \xff byte\n<|endoftext|>\n" + b"long " * 40 + b"\n<|endoftext|>\nLast one.")
    report = BadRecordReport()
    documents = list(read_documents([path], max_record_bytes=100, report=report))
    assert [(d.text, d.source) for d in documents] == [("Once upon a time.\nThe end.", f"{path}:1"),
                                                       ("Second story.", f"{path}:5"),
                                                       ("Last one.", f"{path}:12")]
    assert [(source, kind) for source, kind, _ in report.entries] == [(f"{path}:8", "invalid_utf8"),
                                                                      (f"{path}:10", "oversize")]


def test_parquet_rows_and_directory_order(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    pq.write_table(pa.table({"problem": ["p1", None, "p3"], "solution": ["s1", "s2", ""]}), corpus / "b.parquet")
    pq.write_table(pa.table({"problem": ["q1"]}), corpus / "c.parquet")  # no solution column
    (corpus / "a.jsonl").write_text(json.dumps({"problem": "j", "solution": "k"}) + "\n")
    (corpus / "notes.md").write_text("ignored: not a corpus format")
    report = BadRecordReport()
    documents = list(read_documents([corpus], report=report))
    assert [(d.doc_id, d.text, d.source) for d in documents] == [
        (0, "j\n\nk", f"{corpus}/a.jsonl:1"), (1, "p1\n\ns1", f"{corpus}/b.parquet:1"),
        (2, "p3\n\n", f"{corpus}/b.parquet:3")]
    assert [(source, kind) for source, kind, _ in report.entries] == [
        (f"{corpus}/b.parquet:2", "field_not_text"), (f"{corpus}/c.parquet:1", "missing_field")]


def test_fields_choose_the_text(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"problem": "p", "solution": "s", "answer": "a"}) + "\n")
    assert [d.text for d in read_documents([path], fields=("answer",))] == ["a"]


def test_make_sample_truncates_context_on_the_left():
    ids = list(range(100, 120))
    sample = make_sample(ids, position=15, max_context=4, continuation_tokens=8, doc_id=3, entropy=1.25)
    assert sample.context_ids == [111, 112, 113, 114]
    assert sample.continuation_ids == [115, 116, 117, 118, 119]  # shorter at the document's end
    assert make_sample(ids, 5, 4, 3, 0).continuation_ids == [105, 106, 107]  # capped
    assert make_sample(ids, 5, 4, None, 0).continuation_ids == ids[5:]  # no cap: the rest of the document
    assert (sample.doc_id, sample.position, sample.entropy) == (3, 15, 1.25)
    assert make_sample(ids, 2, 4, 2, 0).context_ids == [100, 101]
    with pytest.raises(ValueError):
        make_sample(ids, 20, 4, 2, 0)


def test_lone_surrogate_is_a_bad_record_not_a_crash(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"problem": "P1", "solution": "S1"}\n'
                    '{"problem": "half a pair \\ud800", "solution": "S2"}\n'  # valid JSON, not encodable text
                    '{"problem": "P3 \\ud83d\\ude00", "solution": "S3"}\n')  # a whole pair: a real character
    report = BadRecordReport()
    documents = list(read_documents([path], report=report))
    assert [d.text for d in documents] == ["P1\n\nS1", "P3 \U0001F600\n\nS3"]
    assert [entry[:2] for entry in report.entries] == [(f"{path}:2", "lone_surrogate")]
    assert report.num_bad == 1 and f"{path}:2: lone_surrogate" in report.format()


def test_directory_is_read_recursively_in_a_stable_order_listing_what_was_skipped(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "b" / "deeper").mkdir(parents=True)
    (corpus / ".cache").mkdir()
    record = lambda text: json.dumps({"problem": text, "solution": "s"}) + "\n"  # noqa: E731
    (corpus / "A.JSONL").write_text(record("upper-case suffix"))
    with gzip.open(corpus / "b" / "c.jsonl.gz", "wt") as file:
        file.write(record("gzipped 1") + record("gzipped 2"))
    (corpus / "b" / "deeper" / "d.json").write_text(json.dumps([{"problem": "array 1", "solution": "s"},
                                                                {"problem": "array 2"}]))
    (corpus / "b" / "e.json").write_text(record("json lines in a .json"))
    with gzip.open(corpus / "f.txt.gz", "wt") as file:
        file.write("story one\n<|endoftext|>\nstory two\n")
    (corpus / "notes.md").write_text("not a corpus")
    (corpus / ".cache" / "x.jsonl").write_text(record("hidden"))
    (corpus / "g.jsonl.tmp123").write_text(record("a temp file"))
    skipped = []
    files = list_corpus_files([corpus], skipped)
    assert [f.relative_to(corpus).as_posix() for f in files] == [
        "A.JSONL", "b/c.jsonl.gz", "b/deeper/d.json", "b/e.json", "f.txt.gz"]
    assert [(p.relative_to(corpus).as_posix(), reason.split(" (")[0]) for p, reason in skipped] == [
        (".cache/x.jsonl", "hidden"), ("g.jsonl.tmp123", "not a corpus format"), ("notes.md", "not a corpus format")]
    report = BadRecordReport()
    documents = list(read_documents([corpus], report=report))
    assert [d.text.split("\n\n")[0] for d in documents] == [
        "upper-case suffix", "gzipped 1", "gzipped 2", "array 1", "json lines in a .json", "story one", "story two"]
    assert documents[3].source == f"{corpus}/b/deeper/d.json:1"
    assert [entry[:2] for entry in report.entries] == [(f"{corpus}/b/deeper/d.json:2", "missing_field")]


def test_truncated_gzip_keeps_the_records_before_the_break(tmp_path):
    path = tmp_path / "c.jsonl.gz"
    lines = "".join(json.dumps({"problem": f"p{i} " + "x" * 50, "solution": "s"}) + "\n" for i in range(200))
    compressed = gzip.compress(lines.encode())
    path.write_bytes(compressed[:len(compressed) // 2])  # a download or copy cut off mid-file
    report = BadRecordReport()
    documents = list(read_documents([path], report=report))
    assert 0 < len(documents) < 200
    assert [d.text.split(" ")[0] for d in documents] == [f"p{i}" for i in range(len(documents))]
    assert report.entries[-1][:2] == (f"{path}:{len(documents) + 1}", "unreadable_file")
