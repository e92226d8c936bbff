"""Documents as a dataset (format, files, type_map), the Tagger's mentions at document offsets, and
scoring by exact character span. Formats are tests/test_formats.py; sentence splitting and the
conversion to BIO sentences are tests/test_sentences.py; the commands are tests/faults/test_faults_documents.py."""

from __future__ import annotations

import textwrap

import pytest
import torch

from bioner.data.doc_corpus import Conversion, gold_documents
from bioner.data.documents import Document, Mention, Passage
from bioner.data.iob import read_split, scan_split
from bioner.data.specs import load_spec
from bioner.errors import BionerError, ConfigError, CorpusError
from bioner.infer.documents import annotate, count_mentions
from bioner.infer.tagger import Tagger
from helpers import EXPERIMENTS

NCBI_DOCS = EXPERIMENTS / "corpora" / "NCBI-disease-PubTator"
QUERIES = """\
  Disease:
    wikipedia: "A disease."
    annotation: "A disease entity."
"""


def spec_file(tmp_path, body: str, name: str = "docs"):
    p = tmp_path / f"{name}.yaml"
    p.write_text(f"name: {name}\n" + textwrap.dedent(body) + "entity_types:\n" + QUERIES, encoding="utf-8")
    return p


def mention_lines(path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.count("\t") >= 4)


@pytest.mark.parametrize(
    "body, needle",
    [
        ("format: pubtator\ncorpus: x\n", "format pubtator: give files"),
        ("corpus: x\nfiles: {train: a.tsv}\n", "give either corpus"),
        (
            "format: pubtator\nfiles: {train: a.txt}\ntype_map: {Foo: Chemical}\n",
            "type_map.Foo: 'Chemical' is not one of entity_types",
        ),
        ("corpus: x\ntype_map: {Foo: Disease}\n", "type_map: applies to document formats"),
        ("format: conll\nfiles: {train: a.txt}\n", "format"),
        ("format: pubtator\nfiles: {training: a.txt}\n", "files.training"),
    ],
)
def test_a_spec_over_documents_names_its_bad_key(tmp_path, body, needle):
    with pytest.raises(ConfigError, match="docs.yaml") as e:
        load_spec(spec_file(tmp_path, body))
    assert needle in str(e.value)


def test_a_missing_split_is_named_when_it_is_needed(tmp_path):
    spec = load_spec(
        spec_file(
            tmp_path,
            f"format: pubtator\nfiles: {{test: {NCBI_DOCS / 'test.pubtator'}}}\n"
            "type_map: {SpecificDisease: Disease, DiseaseClass: Disease, Modifier: Disease, "
            "CompositeMention: Disease}\n",
        )
    )
    assert len(read_split(spec, "test")) > 0
    with pytest.raises(BionerError, match=r"docs.yaml: files.train: not given \(this spec has test\)"):
        read_split(spec, "train")


def test_the_ncbi_pubtator_spec_reads_every_mention_into_sentences():
    spec = load_spec("ncbi-disease-pubtator")
    conv = Conversion()
    stats = scan_split(spec, "test", conv)
    assert conv.documents == 60 and conv.mentions == mention_lines(NCBI_DOCS / "test.pubtator")
    # Every mention is a BIO entity unless a decision says why not (a nested mention keeps the outer one).
    dropped = dict((what, n) for what, n, _ in conv.decisions.summary())
    nested = next(n for what, n in dropped.items() if "nested" in what or "overlap" in what)
    assert stats["entities"] == conv.mentions - nested
    assert stats["per_type"] == {"Disease": stats["entities"]}


def test_a_class_neither_mapped_nor_a_type_stops_the_read_and_null_ignores_it(tmp_path):
    test = NCBI_DOCS / "test.pubtator"
    partial = spec_file(
        tmp_path, f"format: pubtator\nfiles: {{test: {test}}}\ntype_map: {{SpecificDisease: Disease}}\n"
    )
    with pytest.raises(
        CorpusError, match=r"class '(DiseaseClass|Modifier|CompositeMention)' is neither an entity type"
    ):
        read_split(load_spec(partial), "test")
    ignoring = spec_file(
        tmp_path,
        f"format: pubtator\nfiles: {{test: {test}}}\n"
        "type_map: {SpecificDisease: Disease, DiseaseClass: null, Modifier: null, CompositeMention: null}\n",
        name="ignoring",
    )
    conv = Conversion()
    docs = list(gold_documents(load_spec(ignoring), "test", conv))
    assert {m.type for d in docs for m in d.mentions} == {"Disease"}
    assert conv.mentions + sum(conv.ignored.values()) == mention_lines(test)
    assert set(conv.ignored) == {"DiseaseClass", "Modifier", "CompositeMention"}


def _doc(doc_id: str, *mentions: tuple[int, int, str]) -> Document:
    text = "x" * 40
    return Document(doc_id, [Passage(0, text, mentions=[Mention(s, e, text[s:e], t) for s, e, t in mentions])])


def test_document_scoring_is_exact_span_and_type_counted_once():
    gold = [_doc("1", (0, 5, "Disease"), (10, 15, "Disease"), (20, 25, "Chemical")), _doc("2", (3, 8, "Disease"))]
    pred = [
        _doc("1", (0, 5, "Disease"), (0, 5, "Disease"), (10, 14, "Disease"), (20, 25, "Disease"), (30, 35, "Gene")),
        _doc("3", (3, 8, "Disease")),
    ]  # document 3 is not gold's 2: a false positive and a miss
    s = count_mentions(gold, pred, ["Disease", "Chemical"]).scores()
    # Disease: tp 1 (0-5, its duplicate counted once); predicted 0-5, 10-14, 20-25 (doc 1), 3-8 (doc 3); gold 3
    assert s["per_type"]["Disease"] == {
        "precision": 0.25,
        "recall": 1 / 3,
        "f1": pytest.approx(2 / 7),
        "tp": 1,
        "fp": 3,
        "fn": 2,
    }
    assert s["per_type"]["Chemical"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "tp": 0, "fp": 0, "fn": 1}
    assert (s["precision"], s["recall"]) == (0.25, 0.25)  # Gene is not scored: the corpus does not annotate it


@pytest.fixture(scope="module")
def tagger(tiny_bert, minilm_tokenizer, tmp_path_factory):
    from bioner.model import ModelMeta, build_model, save_model

    torch.manual_seed(3)
    m = build_model(tiny_bert, 3)
    with torch.no_grad():  # decisive random heads: plenty of entities, at arbitrary words
        m.ner_head.weight.mul_(50)
    meta = ModelMeta(
        labels=["O", "B-Disease", "I-Disease"], types=["Disease"], max_length=32, dataset="toy", encoder=tiny_bert
    )
    return Tagger.load(save_model(m, minilm_tokenizer, tmp_path_factory.mktemp("docs") / "model", meta))


TRICKY = [
    "Mutations of the 5'-UTR of IL-2R(alpha) in α-thalassemia and β-catenin-driven tumours.",
    "Familial adenomatous polyposis (FAP) is inherited.\r\nIt causes colon cancer. Ca²⁺ channels; naïve T-cells.",
]


def test_annotated_mentions_sit_at_exact_document_offsets(tagger):
    docs = [
        Document(
            "d1",
            [Passage(0, TRICKY[0], {"type": "title"}), Passage(len(TRICKY[0]) + 1, TRICKY[1], {"type": "abstract"})],
        ),
        Document("d2", [Passage(100, TRICKY[1])]),
    ]  # a passage far from 0, as in a PMC article's later sections
    old = Mention(100, 107, TRICKY[1][:7], "Disease")
    docs[1].passages[0].mentions.append(old)
    out = annotate(tagger, docs)
    found = [(d, p, m) for d in out for p in d.passages for m in p.mentions]
    assert len(found) >= 5 and old not in out[1].mentions  # replaced by default
    for d, p, m in found:
        assert d.text_at(m.start, m.end) == m.text and p.offset <= m.start < m.end <= p.end
        assert 0 < m.score <= 1 and m.type == "Disease"
    kept = annotate(tagger, [Document("d2", [Passage(100, TRICKY[1], mentions=[old])])], keep=True)[0]
    assert old in kept.mentions and len(kept.mentions) > 1


def test_a_document_is_tagged_as_its_sentences(tagger):
    """A document's mentions are those of its sentences tagged one by one, moved to document offsets."""
    from bioner.data.sentences import sentences_of

    doc = Document("d", [Passage(0, TRICKY[1])])
    sentences = sentences_of(doc)
    assert len(sentences) >= 2
    expected = set()
    for s in sentences:
        text = TRICKY[1][s.start : s.end]
        expected |= {(s.start + e["start"], s.start + e["end"]) for e in tagger.entities([text])[0]}
    got = {(m.start, m.end) for m in annotate(tagger, [doc])[0].mentions}
    assert got == expected and got


def test_a_composite_mixes_iob_and_documents_and_scores_each_its_own_way(tmp_path, make_dataset, tagger):
    from bioner.infer.evaluate import corpus_counts, scores_report

    iob = make_dataset("mix-iob", sizes=(8, 4, 6))
    docs = spec_file(
        tmp_path,
        f"format: pubtator\nfiles: {{test: {NCBI_DOCS / 'test.pubtator'}}}\n"
        "type_map: {SpecificDisease: Disease, DiseaseClass: Disease, Modifier: Disease, "
        "CompositeMention: Disease}\n",
        name="mix-docs",
    )
    composite = tmp_path / "mix.yaml"
    composite.write_text(f"name: mix\ncorpora: [{iob}, {docs}]\n", encoding="utf-8")
    spec = load_spec(composite)
    split = read_split(spec, "test")
    assert split.corpora == ["mix-iob", "mix-docs"] and split.corpus.count("mix-iob") == 6
    report = scores_report(corpus_counts(tagger, spec, "test", progress=False))
    per = report["per_corpus"]
    assert set(per) == {"mix-iob", "mix-docs"}
    assert per["mix-docs"]["per_type"]["Disease"]["tp"] + per["mix-docs"]["per_type"]["Disease"]["fn"] == mention_lines(
        NCBI_DOCS / "test.pubtator"
    )
    total = [sum(per[c]["per_type"]["Disease"][k] for c in per) for k in ("tp", "fp", "fn")]
    assert total == [report["per_type"]["Disease"][k] for k in ("tp", "fp", "fn")]  # micro over the corpora
    with pytest.raises(BionerError, match="files.train: not given"):
        load_spec(docs).split_file("train")


def test_a_document_crosses_a_process_boundary_as_json_whole():
    """What the annotate read stage hands its actors: every field back, discontinuous pieces as tuples."""
    import json

    m = Mention(0, 13, "heart failure", "Disease", "T1", ((0, 5), (6, 13)), {"identifier": "D006333"}, 0.75)
    doc = Document(
        "42", [Passage(0, "heart failure", {"type": "title"}, [m])], {"year": "2020"}, [{"id": "R1"}], "a.xml", 7
    )
    back = Document.from_record(json.loads(json.dumps(doc.to_record())))
    assert back == doc and back.passages[0].mentions[0].fragments == ((0, 5), (6, 13))
