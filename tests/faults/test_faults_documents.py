"""Documents through the commands: `bioner predict --format` written back and read by `bioc` itself,
`bioner evaluate --json` on a spec of documents, `bioner datasets check` reporting what the conversion
decided, and bad documents refused with one line and exit 2 before any output."""

from __future__ import annotations

import json

import pytest
from _faultkit import assert_refused, bioner

from helpers import EXPERIMENTS, save_random_model

NCBI_DOCS = EXPERIMENTS / "corpora" / "NCBI-disease-PubTator"


def first_documents(dst, n: int):
    blocks = (NCBI_DOCS / "test.pubtator").read_text(encoding="utf-8").split("\n\n")[:n]
    dst.write_text("\n\n".join(blocks) + "\n\n", encoding="utf-8")
    return dst


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_bert):
    # decisive random heads: entities at arbitrary words
    folder = tmp_path_factory.mktemp("docs") / "model"
    return str(save_random_model(folder, tiny_bert, max_length=64, seed=5, head_scale=50))


def test_predict_writes_bioc_that_bioc_reads_back_with_ids_passages_and_scores(tmp_path, model):
    import bioc

    src = first_documents(tmp_path / "in.pubtator", 4)
    o = bioner(
        "predict", "--model", model, "--input", str(src), "--output", str(tmp_path / "o.pubtator")
    )  # format from .pubtator
    assert o.code == 0, o.stderr
    o = bioner(
        "predict",
        "--model",
        model,
        "--input",
        str(src),
        "--format",
        "pubtator",
        "--output",
        str(tmp_path / "x.pubtator"),
        "--keep-annotations",
    )
    assert o.code == 0, o.stderr
    kept = (tmp_path / "x.pubtator").read_text(encoding="utf-8")
    assert kept.count("SpecificDisease") == src.read_text(encoding="utf-8").count("SpecificDisease")
    assert "SpecificDisease" not in (tmp_path / "o.pubtator").read_text(encoding="utf-8")  # replaced by default

    from bioner.data.formats import open_writer, read_documents

    docs = list(read_documents(tmp_path / "o.pubtator", "pubtator"))
    with open_writer(tmp_path / "o.xml", "bioc") as w:
        for d in docs:
            w.write(d)
    o = bioner(
        "predict",
        "--model",
        model,
        "--input",
        str(tmp_path / "o.xml"),
        "--format",
        "bioc",
        "--output",
        str(tmp_path / "p.xml"),
    )
    assert o.code == 0, o.stderr
    with open(tmp_path / "p.xml", encoding="utf-8") as f:
        collection = bioc.biocxml.load(f)
    assert [d.id for d in collection.documents] == [d.id for d in docs]
    n = 0
    for d in collection.documents:
        assert [p.infons.get("type") for p in d.passages] == ["title", "abstract"]
        for p in d.passages:
            for a in p.annotations:
                loc = a.locations[0]
                assert p.text[loc.offset - p.offset : loc.offset - p.offset + loc.length] == a.text
                assert a.infons["type"] == "Disease" and 0 < float(a.infons["score"]) <= 1
                n += 1
    assert n > 0


def test_predict_jsonl_documents_and_todays_text_lines_both_carry_scores(tmp_path, model):
    src = tmp_path / "docs.jsonl"
    src.write_text(json.dumps({"id": "a", "text": "Colon cancer and α-thalassemia."}) + "\n", encoding="utf-8")
    o = bioner("predict", "--model", model, "--input", str(src))
    assert o.code == 0, o.stderr
    rec = json.loads(o.stdout.splitlines()[0])
    assert rec["id"] == "a" and all(
        rec["text"][e["start"] : e["end"]] == e["text"] and "score" in e for e in rec["entities"]
    )
    o = bioner("predict", "--model", model, "Colon cancer and α-thalassemia.")
    assert o.code == 0 and all("score" in e for e in json.loads(o.stdout)["entities"])


def test_evaluate_json_scores_a_spec_of_documents(model):
    o = bioner("evaluate", "--model", model, "--dataset", "ncbi-disease-pubtator", "--split", "test", "--json")
    assert o.code == 0, o.stderr
    r = json.loads(o.stdout)
    assert set(r) == {"precision", "recall", "f1", "per_type", "per_corpus"}
    d = r["per_type"]["Disease"]
    gold = d["tp"] + d["fn"]
    assert gold == sum(
        1 for x in (NCBI_DOCS / "test.pubtator").read_text(encoding="utf-8").splitlines() if x.count("\t") >= 4
    )
    assert 0 <= r["f1"] <= 1 and r["per_corpus"]["ncbi-disease-pubtator"]["f1"] == r["f1"]


def test_evaluate_json_scores_an_iob_spec_too(model, make_dataset):
    spec = make_dataset("docs-iob", sizes=(8, 4, 8))
    o = bioner("evaluate", "--model", model, "--dataset", str(spec), "--json")
    assert o.code == 0, o.stderr
    r = json.loads(o.stdout)
    d = r["per_type"]["Disease"]
    assert d["tp"] + d["fp"] >= 0 and d["tp"] + d["fn"] > 0 and 0 <= r["recall"] <= 1


def test_datasets_check_reports_what_the_conversion_decided():
    o = bioner("datasets", "check", "ncbi-disease-pubtator")
    assert o.code == 0, o.stderr
    text = " ".join(o.stdout.split())
    assert "60 documents" in text and "472 documents" in text
    for what in (
        "mentions crossing a sentence boundary",
        "inside or overlapping a longer mention",
        "discontinuous mentions",
    ):
        assert what in text
    # the two NCBI mentions that end inside a word, counted and placed (FILE:DOCUMENT:OFFSET)
    # one line each, however narrow the terminal: a place is never cut in two
    (line,) = [x for x in o.stdout.splitlines() if "2 mentions starting or ending inside a word" in x]
    assert "train.pubtator:10802668:105" in line and "train.pubtator:2792129:195" in line, line


PUBTATOR_OK = "1|t|Colon cancer.\n1|a|It is common.\n1\t0\t12\tColon cancer\tDisease\tD1\n\n"


@pytest.mark.parametrize(
    "name, content, needles",
    [
        (
            "offsets.pubtator",
            "1|t|Colon cancer.\n1|a|It is common.\n1\t0\t11\tColon cancer\tDisease\tD1\n\n",
            ["offsets.pubtator:3:"],
        ),
        ("dup.pubtator", PUBTATOR_OK + PUBTATOR_OK.replace("\n\n", "\n"), ["dup.pubtator:", "1"]),
        (
            "broken.xml",
            "<collection><source/><document><id>1</id><passage><offset>0</offset><text>x</passage>",
            ["broken.xml:1"],
        ),
        (
            "empty.xml",
            "<?xml "
            "version='1.0'?>\n<collection><source/><date/><key/>\n<document><id>7</id>\n<passage><offset>0</offset><text></text></passage></document></collection>",
            ["empty.xml", "7"],
        ),
    ],
)
def test_bad_documents_are_refused_with_one_line_before_any_output(tmp_path, model, name, content, needles):
    src = tmp_path / name
    src.write_text(content, encoding="utf-8")
    fmt = "bioc" if name.endswith(".xml") else "pubtator"
    out = tmp_path / "out"
    line = assert_refused(
        bioner("predict", "--model", model, "--input", str(src), "--format", fmt, "--output", str(out)), *needles
    )
    assert line.startswith(str(src)), line
    assert not out.exists()


def test_a_brat_ann_without_its_txt_is_refused(tmp_path, model):
    folder = tmp_path / "brat"
    folder.mkdir()
    (folder / "a.txt").write_text("Colon cancer.", encoding="utf-8")
    (folder / "a.ann").write_text("T1\tDisease 0 12\tColon cancer\n", encoding="utf-8")
    (folder / "b.ann").write_text("T1\tDisease 0 5\tColon\n", encoding="utf-8")
    assert_refused(
        bioner(
            "predict", "--model", model, "--input", str(folder), "--format", "brat", "--output", str(tmp_path / "o")
        ),
        "b.ann",
    )


def test_a_document_over_the_text_limit_is_refused(tmp_path, model, monkeypatch):
    monkeypatch.setenv("BIONER_MAX_TEXT_CHARS", "1000")
    src = tmp_path / "big.jsonl"
    src.write_text(json.dumps({"id": "big", "text": "word " * 1000}) + "\n", encoding="utf-8")
    assert_refused(
        bioner("predict", "--model", model, "--input", str(src), "--output", str(tmp_path / "o.jsonl")), "big.jsonl"
    )
