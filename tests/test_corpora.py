import subprocess
import sys

import pytest

from bioner.data.iob import iter_sentences, read_split, subsample
from bioner.data.specs import load_spec
from bioner.errors import BionerError, ConfigError, CorpusError
from helpers import REPO, write_corpus, write_spec

TYPES = ["Disease"]


def read_bytes(tmp_path, data: bytes):
    p = tmp_path / "x.tsv"
    p.write_bytes(data)
    return p, list(iter_sentences(p, TYPES))


def test_reads_sentences_and_tolerates_crlf_bom_and_missing_final_newline(tmp_path):
    data = "\ufeffBreast\tB-Disease\r\ncancer\tI-Disease\r\n\r\n\r\nIt\tO\r\nworks\tO".encode("utf-8")
    _, sents = read_bytes(tmp_path, data)
    assert sents == [(["Breast", "cancer"], ["B-Disease", "I-Disease"]), (["It", "works"], ["O", "O"])]


def test_tag_column_with_trailing_spaces_is_accepted(tmp_path):
    _, sents = read_bytes(tmp_path, b"flu\tB-Disease  \nx\tO \n")
    assert sents == [(["flu", "x"], ["B-Disease", "O"])]


@pytest.mark.parametrize(
    "data, line, reason",
    [
        (b"a\tO\nb\tO\tO\n", 2, "expected 2 tab-separated fields (token, tag), found 3"),
        (b"a\tO\nb O\n", 2, "expected 2 tab-separated fields (token, tag), found 1"),
        (b"a\tO\n\n\tO\n", 3, "empty token"),
        (b"a\tO\nb\tX-Disease\n", 2, "tag 'X-Disease' is not O, B-TYPE or I-TYPE"),
        (b"a\tO\nb\tB-\n", 2, "tag 'B-' is not O, B-TYPE or I-TYPE"),
        (b"a\tB-Gene\n", 1, "entity type 'Gene' is not declared in the spec (declared: Disease)"),
        (b"a\tO\n\nb\xff\tO\n", 3, "not UTF-8 (byte 0xff at column 2)"),
    ],
)
def test_rejects_malformed_lines_with_file_and_line(tmp_path, data, line, reason):
    p = tmp_path / "x.tsv"
    p.write_bytes(data)
    with pytest.raises(CorpusError) as e:
        list(iter_sentences(p, TYPES))
    assert str(e.value) == f"{p}:{line}: {reason}"


def test_empty_split_missing_file_and_directory_are_refused(tmp_path):
    corpus = write_corpus(tmp_path / "c", {"train": "a\tO\n", "devel": "\n\n", "test": "a\tO\n"})
    spec = load_spec(write_spec(tmp_path / "s.yaml", str(corpus)))
    with pytest.raises(CorpusError, match=r"devel\.tsv:1: empty split"):
        read_split(spec, "devel")
    (corpus / "test.tsv").unlink()
    with pytest.raises(BionerError, match=r"test\.tsv: file not found"):
        read_split(spec, "test")
    (corpus / "test.tsv").mkdir()
    with pytest.raises(BionerError, match=r"test\.tsv: is a directory"):
        read_split(spec, "test")


def test_spec_corpus_is_relative_to_the_spec_file(tmp_path):
    write_corpus(tmp_path / "corpora" / "toy", {"train": "a\tB-Disease\n", "devel": "a\tO\n", "test": "a\tO\n"})
    (tmp_path / "specs").mkdir()
    spec = load_spec(write_spec(tmp_path / "specs" / "toy.yaml", "../corpora/toy"))
    assert read_split(spec, "train").tags == [["B-Disease"]]
    assert spec.labels == ["O", "B-Disease", "I-Disease"]


def test_spec_errors_name_the_key(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\ncorpus: c\nentity_types: {}\n")
    with pytest.raises(ConfigError, match="entity_types"):
        load_spec(p)
    p.write_text(
        'name: x\ncorpus: c\nentity_types:\n  D:\n    wikipedia: w\n    annotation: a\n    dictionary: "no slot"\n'
    )
    with pytest.raises(ConfigError, match=r"entity_types\.D\.dictionary.*\{examples\}"):
        load_spec(p)
    p.write_text("name: x\ncorpus: c\ncorpus_typo: 1\nentity_types:\n  D: {wikipedia: w, annotation: a}\n")
    with pytest.raises(ConfigError, match="corpus_typo: unknown key"):
        load_spec(p)


def test_vendored_corpora_match_the_published_counts():
    # SOURCE.md: sentences and entities per split
    expected = {
        "ncbi-disease": [(5424, 5134), (923, 787), (940, 960)],
        "bc5cdr-chem": [(4560, 5203), (4581, 5347), (4797, 5385)],
        "bc2gm": [(12574, 15197), (2519, 3061), (5038, 6325)],
    }
    from bioner.data.iob import split_stats

    for name, rows in expected.items():
        spec = load_spec(name)
        got = [
            (s["sentences"], s["entities"])
            for s in (split_stats(read_split(spec, x)) for x in ("train", "devel", "test"))
        ]
        assert got == rows, name
    assert (REPO / "experiments" / "corpora" / "SOURCE.md").read_text().count("Creative Commons Attribution 4.0") == 1


def test_subsample_is_seeded_and_keeps_order(tmp_path):
    spec = load_spec("ncbi-disease")
    train = read_split(spec, "train")
    a, b = subsample(train, 0.1, 7), subsample(train, 0.1, 7)
    assert a.tokens == b.tokens and len(a) == round(len(train) * 0.1)
    assert subsample(train, 0.1, 8).tokens != a.tokens


def test_cli_prints_one_line_and_exits_2_on_a_malformed_corpus(tmp_path):
    corpus = write_corpus(tmp_path / "c", {"train": "a\tO\nb\tB-Dis\n", "devel": "a\tO\n", "test": "a\tO\n"})
    spec = write_spec(tmp_path / "s.yaml", str(corpus))
    r = subprocess.run(
        [sys.executable, "-m", "bioner.cli", "datasets", "check", str(spec)], capture_output=True, text=True
    )
    assert r.returncode == 2
    assert (
        r.stderr.strip()
        == f"{corpus / 'train.tsv'}:2: entity type 'Dis' is not declared in the spec (declared: Disease)"
    )
    assert "Traceback" not in r.stderr + r.stdout
