"""bioner.data.formats: reading and writing PubTator, BioC XML/JSON, brat, JSON lines and text, with
the real NCBI disease corpus and hand-made files of tricky offsets, and every refusal's message."""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import re
from pathlib import Path

import bioc
import pytest
from bioc import biocjson
from bioc.tools.pubtator2bioc import pubtator2bioc

from bioner.data.documents import Document, Mention, Passage
from bioner.data.formats import FORMATS, format_guess_failure, guess_format, open_writer, read_documents
from bioner.errors import BionerError, CorpusError

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data" / "documents"
_VENDORED = REPO / "experiments/corpora/NCBI-disease-PubTator/NCBItrainset_corpus.txt"
NCBI = _VENDORED if _VENDORED.exists() else REPO.parent / "shared/data/NCBI-disease-PubTator/NCBItrainset_corpus.txt"
ROUND_TRIP = ("pubtator", "bioc", "bioc-json", "jsonl")  # the formats that hold all an NCBI document holds
NAMES = {
    "pubtator": "docs.pubtator",
    "bioc": "docs.bioc.xml",
    "bioc-json": "docs.json",
    "brat": "brat",
    "jsonl": "docs.jsonl",
    "text": "docs.txt",
}


def first_blocks(n: int) -> str:
    """The first `n` documents of the NCBI file, as its text."""
    blocks = NCBI.read_text(encoding="utf-8").split("\n\n")
    return "\n\n".join(blocks[:n]) + "\n\n"


@pytest.fixture(scope="module")
def ncbi5(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ncbi") / "ncbi5.pubtator"
    path.write_text(first_blocks(5), encoding="utf-8")
    return path


def plain(doc: Document, mention_ids: bool = True) -> Document:
    """`doc` without where it was read (and without its mentions' IDs), for comparing."""
    passages = [
        dataclasses.replace(p, mentions=[m if mention_ids else dataclasses.replace(m, id=None) for m in p.mentions])
        for p in doc.passages
    ]
    return dataclasses.replace(doc, passages=passages, source="", line=0)


def write(docs, path: Path, fmt: str) -> Path:
    with open_writer(path, fmt) as w:
        for d in docs:
            w.write(d)
    return path


def read(path: Path, fmt: str, max_chars: int | None = None) -> list[Document]:
    return list(read_documents(path, fmt, max_chars))


def spans(docs) -> list[tuple]:
    return [(d.id, m.start, m.end, m.text, m.type) for d in docs for m in d.mentions]


def error(path: Path, fmt: str, max_chars: int | None = None) -> str:
    with pytest.raises(BionerError) as e:
        read(path, fmt, max_chars)
    return str(e.value)


# ---------------------------------------------------------------- names


@pytest.mark.parametrize(
    "name, fmt",
    [
        ("a.xml", "bioc"),
        ("a.bioc", "bioc"),
        ("a.BioC.xml", "bioc"),
        ("a.xml.gz", "bioc"),
        ("a.json", "bioc-json"),
        ("a.bioc.json.gz", "bioc-json"),
        ("a.bioc.jsonl", "bioc-json"),
        ("a.pubtator", "pubtator"),
        ("a.pubtator.txt", "pubtator"),
        ("a.PubTator.txt.gz", "pubtator"),
        ("a.jsonl", "jsonl"),
        ("a.ndjson", "jsonl"),
        ("a.jsonl.gz", "jsonl"),
        ("a.txt", None),
        ("a.txt.gz", None),
        ("a.tsv", None),
        ("README", None),
    ],
)
def test_guess_format(name, fmt):
    assert guess_format(name) == fmt
    assert guess_format(Path(name)) == fmt


def test_guess_format_of_a_folder_and_why_not(tmp_path):
    assert guess_format(tmp_path) == "brat"
    assert "plain text" in format_guess_failure("x.txt") and "pubtator" in format_guess_failure("x.txt")
    assert format_guess_failure("x.tsv").startswith("x.tsv: ")
    assert FORMATS == ("pubtator", "bioc", "bioc-json", "brat", "jsonl", "text")


# ---------------------------------------------------------------- the NCBI disease corpus


def lines_of(doc):
    return Path(doc.source).read_text(encoding="utf-8").splitlines()


def test_ncbi_whole_file():
    lines = NCBI.read_text(encoding="utf-8").splitlines()
    titles = [x.split("|")[0] for x in lines if "|t|" in x]
    # 593 title lines; PMID 8528200 is there twice, word for word: refused, naming both lines
    assert len(titles) == 593 and len(set(titles)) == 592 and titles.count("8528200") == 2
    with pytest.raises(
        CorpusError,
        match=rf"^{re.escape(str(NCBI))}:4556: duplicate document ID 8528200 "
        r"\(first at line 3810\), an identical copy",
    ):
        read(NCBI, "pubtator", max_chars=1_000_000)
    # the project's split of it keeps that document once
    splits = [NCBI.parent / f"{s}.pubtator" for s in ("train", "devel", "test")]
    split_lines = [x for f in splits for x in f.read_text(encoding="utf-8").splitlines()]
    mention_lines = [x for x in split_lines if len(x.split("\t")) >= 5]
    docs = [d for f in splits for d in read(f, "pubtator", max_chars=1_000_000)]
    assert len(docs) == 592 and len({d.id for d in docs}) == 592
    assert sum(len(d.mentions) for d in docs) == len(mention_lines) == 5134
    for d in docs:
        assert lines_of(d)[d.line - 1].startswith(f"{d.id}|t|")
        assert [p.infons["type"] for p in d.passages] == ["title", "abstract"]
        assert d.passages[1].offset == len(d.passages[0].text) + 1
        for m in d.mentions:
            assert d.text_at(m.start, m.end) == m.text and m.infons["identifier"]
    # the corpus's one mention line with its quotes made spaces takes the document's text
    quoted = [m for d in docs for m in d.mentions if '"' in m.text]
    assert [m.text for m in quoted] == ['generalized epilepsy and febrile seizures " plus "']


def test_ncbi_first_document(ncbi5):
    doc = read(ncbi5, "pubtator")[0]
    assert doc.id == "10192393" and doc.line == 1 and len(doc.mentions) == 14
    assert doc.mentions[0] == Mention(15, 26, "skin tumour", "DiseaseClass", infons={"identifier": "D012878"})
    assert doc.passages[1].mentions[0].text == "cancer"


@pytest.mark.parametrize("fmt", [*ROUND_TRIP, "gz"])
def test_ncbi_round_trip(ncbi5, tmp_path, fmt):
    docs = read(ncbi5, "pubtator")
    fmt, name = ("bioc", "docs.bioc.xml.gz") if fmt == "gz" else (fmt, NAMES[fmt])
    again = read(write(docs, tmp_path / name, fmt), fmt)
    assert [plain(d, mention_ids=False) for d in again] == [plain(d) for d in docs]
    assert all(d.source == str(tmp_path / name) for d in again)
    twice = read(write(again, tmp_path / ("2" + name), fmt), fmt)
    assert [plain(d) for d in twice] == [plain(d) for d in again]


def test_ncbi_to_brat_and_back(ncbi5, tmp_path):
    docs = read(ncbi5, "pubtator")
    again = sorted(read(write(docs, tmp_path / "brat", "brat"), "brat"), key=lambda d: [d.id for d in docs].index(d.id))
    # one passage: title and abstract on their lines; brat keeps no concept IDs
    assert spans(again) == spans(docs)
    assert [d.passages[0].text for d in again] == [d.passages[0].text + "\n" + d.passages[1].text for d in docs]
    assert {"10192393.ann", "10192393.txt"} <= {p.name for p in (tmp_path / "brat").iterdir()}
    twice = read(write(again, tmp_path / "brat2", "brat"), "brat")  # in the order of their names
    assert [plain(d) for d in twice] == sorted((plain(d) for d in again), key=lambda d: d.id)


def test_bioc_tools_conversion_reads_the_same(ncbi5, tmp_path):
    """PubTator made BioC by `bioc`'s own converter, read by our BioC readers: the same mentions."""
    ours = read(ncbi5, "pubtator")
    collection = bioc.BioCCollection()
    with open(ncbi5, encoding="utf-8") as f:
        for pub in bioc.pubtator.load(f):
            doc = pubtator2bioc(pub)  # the text goes to doc.text, which BioC does not write: passages hold it
            doc.add_passage(bioc.BioCPassage.of_text(pub.title, 0))
            doc.add_passage(bioc.BioCPassage.of_text(pub.abstract, len(pub.title) + 1))
            collection.add_document(doc)
    with open(tmp_path / "tool.xml", "w", encoding="utf-8") as f:
        bioc.dump(collection, f)
    with open(tmp_path / "tool.json", "w", encoding="utf-8") as f:
        biocjson.dump(collection, f, indent=2)
    for path, fmt in [(tmp_path / "tool.xml", "bioc"), (tmp_path / "tool.json", "bioc-json")]:
        theirs = read(path, fmt)
        assert spans(theirs) == spans(ours)
        assert [m.infons["concept_id"] for d in theirs for m in d.mentions] == [
            m.infons["identifier"] for d in ours for m in d.mentions
        ]


def test_bioc_library_reads_what_we_write(ncbi5, tmp_path):
    docs = read(ncbi5, "pubtator")
    with open(write(docs, tmp_path / "d.xml", "bioc"), encoding="utf-8") as f:
        xml = bioc.load(f)
    with open(write(docs, tmp_path / "d.json", "bioc-json"), encoding="utf-8") as f:
        js = biocjson.load(f)
    for collection in (xml, js):
        assert [d.id for d in collection.documents] == [d.id for d in docs]
        anns = [
            (a.locations[0].offset, a.text, a.infons["type"], a.infons["identifier"])
            for d in collection.documents
            for p in d.passages
            for a in p.annotations
        ]
        assert anns == [(m.start, m.text, m.type, m.infons["identifier"]) for d in docs for m in d.mentions]


# ---------------------------------------------------------------- tricky offsets, line ends, scores


def test_tricky_pubtator():
    doc, short = read(DATA / "tricky.pubtator", "pubtator")
    assert [m.text for m in doc.mentions] == [
        "α-Synuclein",
        "β-amyloid",
        "IL-2R(alpha) deficiency",
        "5'-UTR",
        "β2-microglobulin",
        "Parkinson disease",
    ]
    title, abstract = doc.passages
    assert doc.mentions[0].start == 0 and doc.mentions[2].end == title.end  # at the title's start and end
    assert doc.mentions[3].start == abstract.offset and doc.mentions[5].end == abstract.end
    assert all(doc.text_at(m.start, m.end) == m.text for m in doc.mentions)
    assert doc.mentions[3].infons == {} and doc.relations == [{"pubtator": ["Association", "6622", "D010300"]}]
    # a title-only document (`200|a|` empty): one passage; an ID, more fields, a score
    assert short.line == 11 and len(short.passages) == 1
    assert short.mentions[0].infons == {"identifier": "D017827", "field7": "SCA3", "field8": "extra"}
    assert short.mentions[1].infons == {} and short.mentions[2].score == 0.75


@pytest.mark.parametrize("fmt", [*ROUND_TRIP, "brat"])
def test_tricky_round_trip(tmp_path, fmt):
    docs = read(DATA / "tricky.pubtator", "pubtator")
    again = read(write(docs, tmp_path / NAMES[fmt], fmt), fmt)
    assert spans(again) == spans(docs)
    assert [m.score for d in again for m in d.mentions] == [None] * 8 + [0.75]
    if fmt in ("pubtator", "jsonl"):  # relations, and the PubTator file itself, come back as they were
        assert [plain(d) for d in again] == [plain(d) for d in docs]
        if fmt == "pubtator":
            assert (tmp_path / NAMES[fmt]).read_bytes() == (DATA / "tricky.pubtator").read_bytes()
    elif fmt != "brat":  # BioC holds all but PubTator's relation line
        without_relations = [plain(dataclasses.replace(d, relations=[])) for d in docs]
        assert [plain(d, mention_ids=False) for d in again] == without_relations


def test_pubtator_crlf_bom_and_no_blank_line(tmp_path):
    text = (DATA / "tricky.pubtator").read_text(encoding="utf-8")
    crlf = tmp_path / "crlf.pubtator"
    crlf.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))
    packed = tmp_path / "packed.pubtator"
    packed.write_text(text.replace("\n\n200|t|", "\n200|t|"), encoding="utf-8")
    base = [plain(d) for d in read(DATA / "tricky.pubtator", "pubtator")]
    assert [plain(d) for d in read(crlf, "pubtator")] == base
    assert [plain(d) for d in read(packed, "pubtator")] == base


def test_gzip_input_and_output(tmp_path, ncbi5):
    gz = tmp_path / "ncbi5.pubtator.gz"
    gz.write_bytes(gzip.compress(ncbi5.read_bytes()))
    assert guess_format(gz) == "pubtator"
    docs = read(gz, "pubtator")
    assert [plain(d) for d in docs] == [plain(d) for d in read(ncbi5, "pubtator")]
    out = write(docs, tmp_path / "out.jsonl.gz", "jsonl")
    assert gzip.decompress(out.read_bytes()).count(b"\n") == 5
    assert [plain(d) for d in read(out, "jsonl")] == [plain(d) for d in docs]


@pytest.mark.parametrize("fmt", ["pubtator", "bioc", "bioc-json", "brat", "jsonl"])
def test_predicted_scores_round_trip(tmp_path, fmt):
    doc = Document(
        "p1",
        [
            Passage(
                0,
                "Aspirin eases pain.",
                mentions=[
                    Mention(0, 7, "Aspirin", "Chemical", score=0.9312345678901234),
                    Mention(14, 18, "pain", "Disease", score=1.0),
                ],
            )
        ],
    )
    again = read(write([doc], tmp_path / NAMES[fmt], fmt), fmt)
    assert [(m.text, m.score) for m in again[0].mentions] == [("Aspirin", 0.9312345678901234), ("pain", 1.0)]


# ---------------------------------------------------------------- BioC


def test_bioc_xml_sample():
    d1, d2 = read(DATA / "sample.bioc.xml", "bioc")
    assert (d1.id, d1.line, d1.infons) == ("D1", 4, {"journal": "Test J"}) and (d2.id, d2.line) == ("D2", 24)
    assert [(p.offset, p.infons) for p in d1.passages] == [(0, {"type": "title"}), (45, {"type": "abstract"})]
    by_id = {m.id: m for m in d1.mentions}
    assert by_id["A1"].infons == {"identifier": "672"} and by_id["A2"].score == 0.5
    assert by_id["A3"].fragments == ((19, 25), (38, 44)) and (by_id["A3"].start, by_id["A3"].end) == (19, 44)
    assert by_id["A3"].text == "breast cancer"
    # annotations of sentences and of the document go to the passage holding them
    assert [m.id for m in d1.passages[1].mentions] == ["A5", "A6", "A7"]
    assert by_id["A6"].text == "α-thalassemia" and d1.text_at(by_id["A6"].start, by_id["A6"].end) == "α-thalassemia"
    assert [(r["id"], r.get("passage")) for r in d1.relations] == [("R1", 0), ("R2", 45), ("R3", None)]
    assert d1.relations[0]["nodes"] == [{"refid": "A1", "role": "Gene"}, {"refid": "A3", "role": "Disease"}]


@pytest.mark.parametrize("fmt", ["bioc", "bioc-json", "jsonl"])
def test_bioc_sample_round_trip(tmp_path, fmt):
    docs = read(DATA / "sample.bioc.xml", "bioc")
    again = read(write(docs, tmp_path / NAMES[fmt], fmt), fmt)
    assert [plain(d) for d in again] == [plain(d) for d in docs]


def test_bioc_json_lines(tmp_path):
    docs = read(DATA / "sample.bioc.xml", "bioc")
    with open(DATA / "sample.bioc.xml", encoding="utf-8") as f:
        collection = bioc.load(f)
    with biocjson.iterwriter(tmp_path / "d.jsonl") as w:
        for d in collection.documents:
            w.write(d)
    again = read(tmp_path / "d.jsonl", "bioc-json")
    assert [plain(d) for d in again] == [plain(d) for d in docs] and [d.line for d in again] == [1, 2]


def test_bioc_json_document_lines(tmp_path):
    docs = read(DATA / "sample.bioc.xml", "bioc")
    path = write(docs, tmp_path / "d.json", "bioc-json")
    assert [d.line for d in read(path, "bioc-json")] == [2, 3]
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps(json.loads(path.read_text(encoding="utf-8")), indent=1), encoding="utf-8")
    again = read(pretty, "bioc-json")
    assert [plain(d) for d in again] == [plain(d) for d in docs]
    lines = pretty.read_text(encoding="utf-8").splitlines()
    assert [lines[d.line - 1].strip() for d in again] == ["{", "{"]
    assert lines[again[0].line].strip() == '"bioctype": "BioCDocument",'


# ---------------------------------------------------------------- brat


def test_brat_sample():
    doc1, doc2 = read(DATA / "brat", "brat")
    assert (doc1.id, doc1.source, doc1.line) == ("doc1", str(DATA / "brat"), 0)
    t1, t2, t3 = doc1.mentions
    assert t1 == Mention(0, 25, "Breast cancer", "Disease", "T1", ((0, 6), (19, 25)))
    assert t1.discontinuous and not t2.discontinuous and t3.score == 0.875
    assert [r["brat"].split("\t")[0] for r in doc1.relations] == ["R1", "A1", "N1", "#1"]
    assert doc2.id == "doc2" and doc2.mentions == [] and doc2.passages[0].text == "A text with no annotation file.\n"


def test_brat_crlf_offsets(tmp_path):
    folder = tmp_path / "crlf"
    folder.mkdir()
    text = "Title line\r\nThe BRCA1 gene and\r\nbreast\r\ncancer.\r\n"
    (folder / "a.txt").write_bytes(text.encode("utf-8"))
    g, b = text.index("BRCA1"), text.index("breast")
    # over a line break brat writes a space in the entity's text
    ann = f"T1\tGene {g} {g + 5}\tBRCA1\r\nT2\tDisease {b} {b + 14}\tbreast  cancer\r\n"
    (folder / "a.ann").write_bytes(ann.encode("utf-8"))
    doc = read(folder, "brat")[0]
    assert doc.passages[0].text == text
    assert [(m.text, m.start) for m in doc.mentions] == [("BRCA1", g), ("breast\r\ncancer", b)]
    for fmt in ("brat", "bioc", "bioc-json", "jsonl"):
        again = read(write([doc], tmp_path / NAMES[fmt], fmt), fmt)
        assert [plain(d, mention_ids=False) for d in again] == [plain(doc, mention_ids=False)]


@pytest.mark.parametrize("fmt", ["brat", "bioc", "bioc-json", "jsonl"])
def test_brat_round_trip(tmp_path, fmt):
    docs = read(DATA / "brat", "brat")
    again = read(write(docs, tmp_path / NAMES[fmt], fmt), fmt)
    if fmt == "brat":
        assert [plain(d) for d in again] == [plain(d) for d in docs]
        assert (tmp_path / "brat" / "doc1.ann").read_text(encoding="utf-8").splitlines()[
            -1
        ] == "#2\tAnnotatorNotes T3\tscore=0.875"
    else:  # the discontinuous mention and the score too; brat's lines of relations stay with brat (and JSON lines)
        assert [[dataclasses.replace(m, id=None) for m in d.mentions] for d in again] == [
            [dataclasses.replace(m, id=None) for m in d.mentions] for d in docs
        ]
        assert again[0].relations == (docs[0].relations if fmt == "jsonl" else [])


def test_brat_lines_kept_as_written(tmp_path):
    """A relation line ending in a tab (as brat writes some) is read, and written back as it was."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("The BRCA1 gene.", encoding="utf-8")
    ann = "T1\tGene 4 9\tBRCA1\nT2\tGene 10 14\tgene\nR1\tSame Arg1:T1 Arg2:T2\t\nE1\tExpr:T2 Theme:T1\n"
    (tmp_path / "in" / "a.ann").write_text(ann, encoding="utf-8")
    doc = read(tmp_path / "in", "brat")[0]
    assert doc.relations == [{"brat": "R1\tSame Arg1:T1 Arg2:T2\t"}, {"brat": "E1\tExpr:T2 Theme:T1"}]
    write([doc], tmp_path / "out", "brat")
    assert (tmp_path / "out" / "a.ann").read_text(encoding="utf-8") == ann


# ---------------------------------------------------------------- JSON lines and text


def test_jsonl_forms(tmp_path):
    path = tmp_path / "in.jsonl"
    lines = [
        {
            "id": "a",
            "text": "IL-2R(alpha) in α cells",
            "entities": [
                {"start": 0, "end": 12, "text": "IL-2R(alpha)", "type": "Gene", "identifier": "3559", "score": 0.5}
            ],
        },
        {
            "id": 7,
            "passages": [
                {"offset": 0, "text": "Title.", "infons": {"type": "title"}},
                {"offset": 7, "text": "Gout here."},
            ],
            "mentions": [{"start": 7, "end": 11, "type": "Disease"}],
            "infons": {"year": "2001"},
            "lang": "en",
        },
        {},
    ]
    path.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines[:2]) + "\n\n", encoding="utf-8")
    a, b = read(path, "jsonl")
    assert a.mentions == [Mention(0, 12, "IL-2R(alpha)", "Gene", infons={"identifier": "3559"}, score=0.5)]
    assert (b.id, b.line, b.infons) == ("7", 2, {"year": "2001", "lang": "en"})
    assert b.mentions[0].text == "Gout" and b.passages[1].mentions == b.mentions
    out = write([a, b], tmp_path / "out.jsonl", "jsonl")
    first, second = (json.loads(x) for x in out.read_text(encoding="utf-8").splitlines())
    assert set(first) == {"id", "text", "entities"} and first["entities"][0]["identifier"] == "3559"
    assert "passages" in second and "text" not in second
    assert [plain(d) for d in read(out, "jsonl")] == [plain(a), plain(b)]


def test_text_format(tmp_path):
    path = tmp_path / "in.txt"
    path.write_bytes("\ufeffFirst text.\r\n\nThird\x0cwith a form feed\u2028and a line separator.\n".encode("utf-8"))
    docs = read(path, "text")
    assert [(d.id, d.line, d.passages[0].text) for d in docs] == [
        ("1", 1, "First text."),
        ("3", 3, "Third\x0cwith a form feed\u2028and a line separator."),
    ]
    out = write(docs, tmp_path / "out.txt", "text")
    assert out.read_text(encoding="utf-8") == "First text.\nThird\x0cwith a form feed\u2028and a line separator.\n"
    with pytest.raises(ValueError, match="cannot hold mentions"), open_writer(tmp_path / "x.txt", "text") as w:
        w.write(read(DATA / "tricky.pubtator", "pubtator")[0])
    with pytest.raises(BionerError, match="document b: holds a line break"):
        write([Document("b", [Passage(0, "two\nlines")])], tmp_path / "y.txt", "text")
    # PubTator's title and abstract make one line
    plain_docs = [d.without_mentions() for d in read(DATA / "tricky.pubtator", "pubtator")]
    lines = write(plain_docs, tmp_path / "t.txt", "text").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("α-Synuclein and") and "deficiency 5'-UTR variants" in lines[0]


@pytest.mark.parametrize("fmt", ["pubtator", "bioc", "bioc-json", "jsonl"])
def test_writing_to_a_stream(tmp_path, fmt):
    """To sys.stdout (a text stream with a buffer), a text stream without one, a binary one: the same
    bytes as to a file, and the stream left open."""
    docs = read(DATA / "tricky.pubtator", "pubtator")
    expected = write(docs, tmp_path / NAMES[fmt], fmt).read_bytes()
    if fmt in ("bioc", "bioc-json"):  # a date in the head
        expected = expected.replace(re.search(rb"\d{4}-\d\d-\d\d", expected).group(), b"DATE")
    raw = io.BytesIO()
    stdout = io.TextIOWrapper(raw, encoding="utf-8")
    stdout.write("before ")
    text, binary = io.StringIO(), io.BytesIO()
    for stream in (stdout, text, binary):
        write(docs, stream, fmt)
    assert not stdout.closed and not text.closed and not binary.closed
    for got in (raw.getvalue().removeprefix(b"before "), text.getvalue().encode("utf-8"), binary.getvalue()):
        assert re.sub(rb"\d{4}-\d\d-\d\d", b"DATE", got, count=1) == expected
    with pytest.raises(BionerError, match="brat is written to a folder"):
        open_writer(io.StringIO(), "brat")


def test_reading_is_lazy(tmp_path):
    """Documents come as they are read: the first arrives before a bad line further on is met."""
    path = tmp_path / "late.pubtator"
    path.write_text(first_blocks(2) + "junk\n", encoding="utf-8")
    docs = read_documents(path, "pubtator")
    assert next(docs).id == "10192393" and next(docs).id
    with pytest.raises(CorpusError, match=r"late.pubtator:\d+: not a title, abstract, mention or relation line"):
        next(docs)


# ---------------------------------------------------------------- refusals


def _case(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


NCBI1 = (
    "10192393|t|A common human skin tumour is caused by activating mutations in beta-catenin.\n"
    "10192393|a|WNT signalling orchestrates a number of developmental programs.\n"
)
PUBTATOR_ERRORS = [
    # (file, max_chars, line, what the message says)
    (
        NCBI1 + "10192393\t15\t25\tskin tumour\tDiseaseClass\tD012878\n",
        None,
        3,
        "offsets 15-25 hold 'skin tumou' but the line says 'skin tumour'",
    ),
    (NCBI1 + "10192393\t150\t160\tskin tumour\tDiseaseClass\n", None, 3, "offsets 150-160 are outside the text"),
    (
        NCBI1 + "10192393\t70\t82\tti-catenin. \tDiseaseClass\n",
        None,
        3,
        "offsets 70-82 are not inside one passage of document 10192393 (title 0-77, abstract 78-141)",
    ),
    (
        NCBI1 + "10192394\t15\t26\tskin tumour\tDiseaseClass\n",
        None,
        3,
        "a line for document 10192394 within document 10192393 (which starts at line 1)",
    ),
    (NCBI1 + "just some words\n", None, 3, "not a title, abstract, mention or relation line: 'just some words'"),
    (NCBI1 + "10192393\t15\t26\tskin tumour\n", None, 3, "a mention line with 4 fields"),
    (NCBI1 + "10192393\t15\tx\tskin tumour\tDiseaseClass\n", None, 3, "end offset 'x' is not a whole number"),
    (NCBI1 + "10192393\t15\t26\tskin tumour\tDiseaseClass\tD1\tscore=high\n", None, 3, "no such score"),
    ("1|t|\n1|a|An abstract.\n", None, 1, "document 1 has an empty title"),
    (
        "1|t|A title.\n\n1|a|An abstract.\n",
        None,
        3,
        "an abstract line for document 1 with no title line of 1 before it",
    ),
    ("1|t|A title.\n1\tR\tA\tB\n1|a|An abstract.\n", None, 3, "does not come right after its title line"),
    ("\n1\t0\t1\tA\tT\n", None, 2, "an annotation line with no title line before it"),
    (
        NCBI1 + "\n" + NCBI1.replace("common", "rare"),
        None,
        4,
        "duplicate document ID 10192393 (first at line 1), the two documents differ",
    ),
    (NCBI1, 70, 1, "title of document 10192393: 77 characters, more than the limit of 70 characters per text"),
    (b"1|t|A title.\n1|a|An \xff abstract.\n", None, 2, "not UTF-8 text (byte 8 of the line)"),
    ("1|t|" + "a" * 100_000 + "\n", 100, 1, "a line longer than the limit of 100 characters per text"),
]


@pytest.mark.parametrize("content, max_chars, line, what", PUBTATOR_ERRORS)
def test_pubtator_refusals(tmp_path, content, max_chars, line, what):
    path = _case(tmp_path, "bad.pubtator", content)
    message = error(path, "pubtator", max_chars)
    assert message.startswith(f"{path}:{line}: ")
    if what != "no such score":
        assert what in message
    else:
        assert "score 'high' is not a number" in message


def _bioc(documents: str) -> str:
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<collection><source/><date/><key/>\n{documents}\n</collection>\n'


BIOC_DOC = (
    "<document><id>{id}</id>\n<passage><offset>{offset}</offset><text>{text}</text>\n"
    '<annotation id="A1"><infon key="type">Gene</infon><location offset="{at}" length="5"/><text>{said}</text>'
    "</annotation>\n</passage></document>"
)
ONE = BIOC_DOC.format(id="D1", offset=0, text="BRCA1 gene", at=0, said="BRCA1")
BIOC_ERRORS = [
    (_bioc(ONE) + "<junk>", None, 8, "not well-formed XML: Extra content at the end of the document (column 1)"),
    (
        _bioc(ONE.replace("<text>BRCA1 gene</text>", "<text></text>")),
        None,
        4,
        "document D1: the passage at offset 0 has no text",
    ),
    (_bioc(ONE.replace("<text>BRCA1 gene</text>", "")), None, 4, "document D1: the passage at offset 0 has no text"),
    (
        _bioc(BIOC_DOC.format(id="D1", offset=10, text="The BRCA1 gene", at=13, said="BRCA1")),
        None,
        5,
        "document D1: offset 13: annotation A1: offsets 13-18 hold ' BRCA' but the annotation says 'BRCA1'",
    ),
    (
        _bioc(BIOC_DOC.format(id="D1", offset=0, text="BRCA1 gene", at=20, said="BRCA1")),
        None,
        5,
        "document D1: offset 20: annotation A1: offsets 20-25 are outside the text of document D1",
    ),
    (_bioc(ONE.replace('key="type"', 'key="kind"')), None, 5, "document D1: annotation A1 has no 'type' infon"),
    (
        _bioc(ONE.replace('length="5"', 'length="five"')),
        None,
        5,
        "document D1: annotation A1: location length 'five' is not a whole number",
    ),
    (
        _bioc(ONE + "\n" + BIOC_DOC.format(id="D1", offset=0, text="BRCA2 gene", at=0, said="BRCA2")),
        None,
        7,
        "duplicate document ID D1 (first at line 3), the two documents differ",
    ),
    (_bioc(ONE), 5, 3, "document D1, passage at offset 0: 10 characters, more than the limit of 5 characters per text"),
    (
        '<?xml version="1.0"?>\n<corpus><document/></corpus>\n',
        None,
        2,
        "a <document> outside a <collection>: not a BioC",
    ),
    ('<?xml version="1.0"?>\n<corpus/>\n', None, 1, "no <collection> element: not a BioC XML file"),
]


@pytest.mark.parametrize("content, max_chars, line, what", BIOC_ERRORS)
def test_bioc_xml_refusals(tmp_path, content, max_chars, line, what):
    path = _case(tmp_path, "bad.xml", content)
    message = error(path, "bioc", max_chars)
    assert message.startswith(f"{path}:{line}: ") and what in message


def test_bioc_json_refusals(tmp_path):
    good = tmp_path / "good.json"
    write(read(DATA / "sample.bioc.xml", "bioc"), good, "bioc-json")
    text = good.read_text(encoding="utf-8")
    path = _case(tmp_path, "bad.json", text.replace('"BRCA2"', '"BRCA3"', 1))
    assert error(path, "bioc-json").startswith(
        f"{path}:2: document D1: offset 10: annotation A2: offsets 10-15 hold 'BRCA2' but the annotation says 'BRCA3'"
    )
    path = _case(tmp_path, "bad2.json", text.replace('"D2"', '"D2",,'))
    assert error(path, "bioc-json").startswith(f"{path}:3: not valid JSON: Expecting")
    path = _case(tmp_path, "bad3.json", '{"source": "", "documents": [\n{"id": "x"}\n]}')
    assert error(path, "bioc-json") == f"{path}:2: document x: no passage"
    path = _case(tmp_path, "bad4.json", "[1, 2]")
    assert error(path, "bioc-json").startswith(f"{path}:1: not a BioC JSON collection: expected '{{', found '['")


BRAT_ERRORS = [
    ("T1\tGene 4 9\tBRCA2\n", "a.ann", 1, "offsets 4-9 hold 'BRCA1' but the line says 'BRCA2'"),
    ("T1\tGene 4 9\tBRCA1\nT2\tGene 4;9\tBRCA1\n", "a.ann", 2, "a malformed entity line (offsets '4;9'"),
    ("T1\tGene 4 9 BRCA1\n", "a.ann", 1, "a malformed entity line (expected 'T1<TAB>Type START END<TAB>text')"),
    ("T1\tGene 4 9\tBRCA1\nR1\tCause T1\n", "a.ann", 2, "a malformed line: 'R1\\tCause T1'"),
    ("T1\tGene 4 9\tBRCA1\nX1\tsomething\n", "a.ann", 2, "a line of an unknown kind 'X'"),
    ("T1\tGene 4 9\tBRCA1\nT1\tGene 0 3\tThe\n", "a.ann", 2, "duplicate annotation ID T1 (first at line 1)"),
    ("T1\tGene 4 9\tBRCA1\nno tab here\n", "a.ann", 2, "a malformed line (no tab after an annotation ID)"),
    ("T1\tGene 40 49\tBRCA1\n", "a.ann", 1, "offsets 40-49 are outside the text of document a"),
]


@pytest.mark.parametrize("ann, name, line, what", BRAT_ERRORS)
def test_brat_refusals(tmp_path, ann, name, line, what):
    (tmp_path / "a.txt").write_text("The BRCA1 gene.", encoding="utf-8")
    (tmp_path / "a.ann").write_text(ann, encoding="utf-8")
    message = error(tmp_path, "brat")
    assert message.startswith(f"{tmp_path / name}:{line}: ") and what in message


def test_brat_file_refusals(tmp_path):
    (tmp_path / "a.txt").write_text("The BRCA1 gene.", encoding="utf-8")
    (tmp_path / "b.ann").write_text("T1\tGene 4 9\tBRCA1\n", encoding="utf-8")
    assert error(tmp_path, "brat") == f"{tmp_path / 'b.ann'}:1: no b.txt beside this .ann file"
    (tmp_path / "b.ann").unlink()
    assert (
        error(tmp_path, "brat", max_chars=10)
        == f"{tmp_path / 'a.txt'}:1: the text: 15 characters, more than the limit of 10 characters per text"
    )
    (tmp_path / "a.txt").write_bytes(b"The\nBRCA1 \xfe gene.")
    assert error(tmp_path, "brat") == f"{tmp_path / 'a.txt'}:2: not UTF-8 text (byte 7 of the line)"


JSONL_ERRORS = [
    ('{"id": "a", "text": "x"}\n{"id": "b", "text": "y",}\n', None, 2, "not valid JSON: Expecting property name"),
    ('{"text": "x"}\n', None, 1, 'no "id"'),
    ('{"id": "", "text": "x"}\n', None, 1, "\"id\" '' is not a non-empty string"),
    ('{"id": "a", "text": ""}\n', None, 1, 'document a: an empty "text"'),
    ('{"id": "a"}\n', None, 1, 'document a: no "text" (nor "passages")'),
    ('{"id": "a", "text": ["x"]}\n', None, 1, 'document a: "text" is a list, not a string'),
    (
        '{"id": "a", "text": "x"}\n\n{"id": "a", "text": "y"}\n',
        None,
        3,
        "duplicate document ID a (first at line 1), the two documents differ",
    ),
    (
        '{"id": "a", "text": "abcdef"}\n',
        5,
        1,
        "document a, passage at offset 0: 6 characters, more than the limit of 5",
    ),
    (
        '{"id": "a", "text": "abcdef", "entities": [{"start": 1, "end": 3, "text": "bd", "type": "T"}]}\n',
        None,
        1,
        "document a: entity 1: offsets 1-3 hold 'bc' but the entity says 'bd'",
    ),
    ('["a"]\n', None, 1, "expected a JSON object, found list"),
]


@pytest.mark.parametrize("content, max_chars, line, what", JSONL_ERRORS)
def test_jsonl_refusals(tmp_path, content, max_chars, line, what):
    path = _case(tmp_path, "bad.jsonl", content)
    message = error(path, "jsonl", max_chars)
    assert message.startswith(f"{path}:{line}: ") and what in message


def test_text_refusals(tmp_path):
    path = _case(tmp_path, "bad.txt", b"fine\nnot \xc3 fine\n")
    assert error(path, "text") == f"{path}:2: not UTF-8 text (byte 5 of the line)"
    path = _case(tmp_path, "long.txt", "short\n" + "x" * 1000 + "\n")
    assert error(path, "text", max_chars=100) == f"{path}:2: more than the limit of 100 characters per text"
    path = _case(tmp_path, "edge.txt", "short\n" + "é" * 101 + "\n")
    assert (
        error(path, "text", max_chars=100)
        == f"{path}:2: the line: 101 characters, more than the limit of 100 characters per text"
    )


def test_file_refusals(tmp_path):
    with pytest.raises(BionerError, match=r"missing.xml: not found"):
        read_documents(tmp_path / "missing.xml", "bioc")
    with pytest.raises(BionerError, match="unknown document format 'conll'"):
        read_documents(DATA / "tricky.pubtator", "conll")
    with pytest.raises(BionerError, match="a folder; pubtator is read from a file"):
        read_documents(tmp_path, "pubtator")
    with pytest.raises(BionerError, match="not a folder; brat is read from a folder"):
        read_documents(DATA / "tricky.pubtator", "brat")


def test_writer_refusals(tmp_path):
    bioc_doc = read(DATA / "sample.bioc.xml", "bioc")[0]
    with pytest.raises(BionerError, match="PubTator: mention 19-44 is discontinuous, which PubTator cannot hold"):
        write([dataclasses.replace(bioc_doc, passages=bioc_doc.passages[:1])], tmp_path / "a.pubtator", "pubtator")
    three = Document("x", [Passage(0, "A."), Passage(3, "B."), Passage(6, "C.")])
    with pytest.raises(BionerError, match="PubTator holds a title at offset 0 and an abstract right after it"):
        write([three], tmp_path / "b.pubtator", "pubtator")
    spaced = Document("y", [Passage(0, "A gene.", mentions=[Mention(2, 6, "gene", "Gene product")])])
    with pytest.raises(BionerError, match="cannot be written as brat: mention 2-6: its type 'Gene product'"):
        write([spaced], tmp_path / "brat", "brat")
    with pytest.raises(BionerError, match=r"document x: a second document with this ID"):
        write([three, three], tmp_path / "c.jsonl", "jsonl")
    control = Document("z", [Passage(0, "A\x0bB")])
    with pytest.raises(BionerError, match="U\\+000B .* a character XML cannot hold"):
        write([control], tmp_path / "d.xml", "bioc")
    assert read(write([control], tmp_path / "d.json", "bioc-json"), "bioc-json")[0].passages[0].text == "A\x0bB"
