"""bioner.data.sentences: words and sentences with exact offsets, and annotated documents -> BIO sentences."""

from __future__ import annotations

import random
import re
import time

import pytest

from bioner.data import sentences as S
from bioner.data.documents import Document, Mention, Passage
from bioner.data.iob import iter_sentences
from bioner.data.sentences import Decisions, Sentence, labelled_sentences, sentences_of, split_sentences, split_words
from bioner.data.tags import spans
from bioner.errors import BionerError
from helpers import EXPERIMENTS, NCBI

PUBTATOR = EXPERIMENTS / "corpora" / "NCBI-disease-PubTator" / "NCBItrainset_corpus.txt"

TRICKY = (
    "The α-subunit and β2 chain bind the 5'-UTR of IL-2R(alpha).\r\nIn\tmice, TNF\u00a0levels rose 😀 "
    "(p < 0.05).\r\n\r\nZero\u200bwidth and x\u0301 combining, ﬁne ligature, ＡＢＣ fullwidth. Done"
)


def _check_sentences(text: str, out: list[tuple[int, int]]) -> None:
    """No leading or trailing space, in order, every non-space character in exactly one sentence."""
    covered = [False] * len(text)
    prev_end = 0
    for s, e in out:
        assert prev_end <= s < e <= len(text)
        assert not text[s].isspace() and not text[e - 1].isspace()
        covered[s:e] = [True] * (e - s)
        prev_end = e
    assert all(covered[i] for i, c in enumerate(text) if not c.isspace())


def _check_words(doc: Document, sents: list[Sentence]) -> None:
    full = {i: p for i, p in enumerate(doc.passages)}
    for s in sents:
        p = full[s.passage]
        assert p.offset <= s.start < s.end <= p.end
        for w, a, b in s.words:
            assert doc.text_at(a, b) == w and s.start <= a < b <= s.end


# --- words ------------------------------------------------------------------------------------------


def test_words_split_as_the_corpora_do():
    words = [w for w, _, _ in split_words("5'-UTR of IL-2R(alpha)")]
    assert words == ["5", "'", "-", "UTR", "of", "IL", "-", "2R", "(", "alpha", ")"]
    assert [w for w, _, _ in split_words("α-β2 😀\u200bx")] == ["α", "-", "β2", "😀", "x"]  # zero-width space: no word
    for w, a, b in split_words(TRICKY):
        assert TRICKY[a:b] == w


def test_word_offsets_are_document_offsets_on_tricky_text():
    doc = Document("d1", [Passage(0, "A title\twith\u00a0tabs."), Passage(21, TRICKY)])
    sents = sentences_of(doc)
    _check_words(doc, sents)
    words = [w for s in sents for w in s.words]
    assert [w for w, _, _ in words] == [w for p in doc.passages for w, _, _ in split_words(p.text)]
    assert {s.passage for s in sents} == {0, 1}


def test_a_long_passage_keeps_exact_offsets_and_is_fast():
    unit = "Mutations in BRCA1 (e.g. 5'-UTR\u00a0variants) cause α-thalassaemia.\r\nIn\tresponse, 😀 cells die. "
    text = (unit * (50_000 // len(unit) + 1))[:50_000]
    doc = Document("long", [Passage(7, text)])
    t0 = time.perf_counter()
    sents = sentences_of(doc)
    assert time.perf_counter() - t0 < 2.0
    _check_sentences(text, [(s.start - 7, s.end - 7) for s in sents])
    _check_words(doc, sents)
    assert sum(len(s.words) for s in sents) == len(split_words(text))
    assert len(sents) > 1000


# --- sentences -----------------------------------------------------------------------------------------


def test_sentences_cover_the_text_on_tricky_input():
    out = split_sentences(TRICKY)
    _check_sentences(TRICKY, out)
    assert [TRICKY[s:e][:6] for s, e in out] == ["The α-", "In\tmic", "Zero\u200bw", "Done"]


def test_no_terminator_is_one_sentence_and_whitespace_is_none():
    assert split_sentences("  no full stop here  ") == [(2, 19)]
    assert split_sentences(" \t\r\n \u00a0 ") == []
    assert split_sentences("") == []
    assert sentences_of(Document("d", [Passage(0, "   "), Passage(4, "Text")])) == [
        Sentence("d", 1, 4, 8, (("Text", 4, 8),))
    ]


NCBI_TEXT = (
    "WNT signalling orchestrates a number of developmental programs. In response to this stimulus, "
    "cytoplasmic beta-catenin is stabilized, e.g. by mutations (Fig. 2) that lead to cancer. In the colon, "
    "Dr. Smith found 75% of these tumours. the next one starts in lowercase."
)


def test_ncbi_sentences_split_where_the_corpus_does():
    got = [NCBI_TEXT[s:e] for s, e in split_sentences(NCBI_TEXT)]
    assert got == [
        "WNT signalling orchestrates a number of developmental programs.",
        "In response to this stimulus, cytoplasmic beta-catenin is stabilized, e.g. by mutations (Fig. 2) that lead "
        "to cancer.",  # abbreviations (e.g., Fig.) end no sentence
        "In the colon, Dr. Smith found 75% of these tumours. the next one starts in lowercase.",  # nor before lowercase
    ]


ODD = [TRICKY, "A.\r\nB.\tC.\u00a0D. \u2028E. \u00adF.", "Ω. ＡＢＣ. x\u0301. \ufeffNext.", "a\x00b. \x85C. \u3000D."]


@pytest.mark.parametrize("text", ODD)
def test_syntok_offsets_point_at_the_text(text):
    """The segmenter's own offsets are right on odd text, so the checked path (not the fallback) runs."""
    assert S._syntok_starts(text) is not None


def test_a_failing_segmenter_falls_back_to_the_rule(monkeypatch):
    def broken(text):
        raise RuntimeError("boom")

    monkeypatch.setattr(S._syntok, "analyze", broken)
    assert split_sentences("One here. Two e.g. here. three.") == [(0, 9), (10, 31)]


def test_wrong_segmenter_offsets_fall_back_to_the_rule(monkeypatch):
    class Tok:
        value, offset = "One", 5

    monkeypatch.setattr(S._syntok, "analyze", lambda text: [[[Tok()]]])
    assert split_sentences("One here. Two here.") == [(0, 9), (10, 19)]


def test_no_cut_inside_a_word(monkeypatch):
    class Tok:
        def __init__(self, value, offset):
            self.value, self.offset = value, offset

    monkeypatch.setattr(S._syntok, "analyze", lambda text: [[[Tok("ab", 0)], [Tok("cd", 2)], [Tok(".", 4)]]])
    assert split_sentences("abcd.") == [(0, 4), (4, 5)]


def test_two_passages_give_passage_indices_and_document_offsets():
    title, abstract = "BRCA1 and cancer.", "Carriers are at risk. In response, screening helps."
    doc = Document("p1", [Passage(0, title), Passage(len(title) + 1, abstract)])
    sents = sentences_of(doc)
    text = title + " " + abstract
    assert [(s.passage, text[s.start : s.end]) for s in sents] == [
        (0, "BRCA1 and cancer."),
        (1, "Carriers are at risk."),
        (1, "In response, screening helps."),
    ]
    assert sents[2].words[0] == ("In", text.index("In response"), text.index("In response") + 2)
    _check_words(doc, sents)


# --- annotated documents -> BIO sentences --------------------------------------------------------------


def _doc(text: str, *mentions: tuple) -> Document:
    """One passage at offset 10; mentions as (text, type) found in the text, or (start, end, type) in it."""
    ms = []
    for m in mentions:
        if len(m) == 2:
            a = text.index(m[0])
            ms.append(Mention(10 + a, 10 + a + len(m[0]), m[0], m[1]))
        else:
            ms.append(Mention(10 + m[0], 10 + m[1], text[m[0] : m[1]], m[2]))
    return Document("d", [Passage(10, text, mentions=ms)], source="toy.txt")


def _tagged(doc: Document) -> tuple[list[list[tuple[str, str]]], Decisions]:
    decisions = Decisions()
    out = labelled_sentences(doc, decisions)
    for s, tags in out:
        assert len(tags) == len(s.words)
        _check_words(doc, [s])
    return [[(w, t) for (w, _, _), t in zip(s.words, tags, strict=True)] for s, tags in out], decisions


def test_a_mention_crossing_a_boundary_joins_the_sentences():
    text = "Patients had breast. Cancer was found. Then nothing happened."
    assert len(split_sentences(text)) == 3
    got, d = _tagged(_doc(text, ("breast. Cancer", "Disease")))
    assert len(got) == 2
    assert got[0][2:5] == [("breast", "B-Disease"), (".", "I-Disease"), ("Cancer", "I-Disease")]
    assert [t for _, t in got[1]] == ["O"] * 4
    assert d.crossing == [f"toy.txt:d:{10 + text.index('breast')}"] and not d.nested


def test_nested_mentions_keep_the_outer_one():
    text = "She had hereditary breast cancer syndrome."
    got, d = _tagged(
        _doc(
            text, ("breast cancer", "Disease"), ("hereditary breast cancer syndrome", "Disease"), ("cancer", "Disease")
        )
    )
    assert [t for _, t in got[0]] == ["O", "O", "B-Disease", "I-Disease", "I-Disease", "I-Disease", "O"]
    assert len(d.nested) == 2 and d.nested[0] == f"toy.txt:d:{10 + text.index('breast')}"


def test_overlapping_mentions_keep_the_longest():
    text = "A breast cancer syndrome case."
    got, d = _tagged(_doc(text, ("breast cancer", "Disease"), ("cancer syndrome case", "Disease")))
    assert [t for _, t in got[0]] == ["O", "O", "B-Disease", "I-Disease", "I-Disease", "O"]
    assert d.nested == [f"toy.txt:d:{10 + text.index('breast')}"]


def test_a_discontinuous_mention_is_tagged_over_its_extent():
    text = "Breast and ovarian cancer run in families."
    m = Mention(10, 10 + 25, "Breast cancer", "Disease", fragments=((10, 16), (29, 35)))
    doc = Document("d", [Passage(10, text, mentions=[m])], source="toy.txt")
    got, d = _tagged(doc)
    assert [t for _, t in got[0][:5]] == ["B-Disease", "I-Disease", "I-Disease", "I-Disease", "O"]
    assert d.discontinuous == ["toy.txt:d:10"]


def test_a_mention_boundary_inside_a_word_splits_the_word():
    text = "The BRCA1mutation carriers had antitumour drugs."
    got, d = _tagged(_doc(text, ("BRCA1", "Gene"), ("tumour", "Disease")))
    assert got[0] == [
        ("The", "O"),
        ("BRCA1", "B-Gene"),
        ("mutation", "O"),
        ("carriers", "O"),
        ("had", "O"),
        ("anti", "O"),
        ("tumour", "B-Disease"),
        ("drugs", "O"),
        (".", "O"),
    ]
    assert len(d.split_words) == 2


def test_mentions_of_several_types_and_without_words():
    text = "Cisplatin causes nephrotoxicity .  Done."
    got, d = _tagged(_doc(text, ("Cisplatin", "Chemical"), ("nephrotoxicity", "Disease"), (33, 34, "Disease")))
    assert [t for _, t in got[0]] == ["B-Chemical", "O", "B-Disease", "O"]
    assert d.no_words == ["toy.txt:d:43"]


def test_a_mention_outside_its_passage_is_an_error():
    doc = Document("d", [Passage(0, "Short text.", mentions=[Mention(5, 40, "x", "Disease")])], source="toy.txt")
    with pytest.raises(BionerError, match="toy.txt: document d, offset 5: mention 'x'"):
        labelled_sentences(doc, Decisions())


def test_decisions_merge_and_summarise():
    a, b = Decisions(crossing=["f:1:0"]), Decisions(crossing=["f:2:5", "f:3:1", "f:4:2"], nested=["f:1:3"])
    a.merge(b)
    summary = a.summary(first=2)
    assert [(n, places) for _, n, places in summary] == [
        (4, ["f:1:0", "f:2:5"]),
        (1, ["f:1:3"]),
        (0, []),
        (0, []),
        (0, []),
    ]
    assert summary[0][0].startswith("mentions crossing")


def _pubtator(path) -> list[Document]:
    """The PubTator file's documents (title passage, abstract passage), every mention `Disease`; a PMID
    that comes again (the file holds one abstract twice, train.tsv once) is read once."""
    docs: dict[str, Document] = {}
    title, repeated = "", False
    for line in path.read_text(encoding="utf-8").splitlines():
        if re.match(r"^\d+\|t\|", line):
            pmid, _, title = line.split("|", 2)
            repeated = pmid in docs
        elif re.match(r"^\d+\|a\|", line) and not repeated:
            pmid, _, abstract = line.split("|", 2)
            docs[pmid] = Document(pmid, [Passage(0, title), Passage(len(title) + 1, abstract)], source=path.name)
        elif line.strip() and not repeated:
            pmid, start, end, text, _, _ = line.split("\t")
            doc = docs[pmid]
            doc.passage_at(int(start), int(end)).mentions.append(Mention(int(start), int(end), text, "Disease"))
    return list(docs.values())


def test_ncbi_documents_reproduce_the_iob_entities():
    """NCBI-disease's PubTator training set, converted, holds the entities of the IOB train.tsv (the same
    abstracts), up to what the decisions explain."""
    docs = _pubtator(PUBTATOR)
    decisions, entities = Decisions(), 0
    for doc in docs:
        for _, tags in labelled_sentences(doc, decisions):
            entities += len(spans(tags))
    iob = sum(len(spans(tags)) for _, tags in iter_sentences(NCBI / "train.tsv", ["Disease"]))
    mentions = sum(len(d.mentions) for d in docs)
    print(
        f"{len(docs)} documents, {mentions} mentions -> {entities} entities; train.tsv {iob}: "
        f"difference {entities - iob}; " + "; ".join(f"{what}: {n}" for what, n, _ in decisions.summary())
    )
    assert entities == mentions - len(decisions.nested) - len(decisions.no_words)
    assert abs(entities - iob) <= len(decisions.nested) + len(decisions.no_words)


def test_random_documents_keep_every_invariant():
    """Mentions anywhere (inside words, across sentences, nested, in both passages): words stay the text at
    their offsets, the tags are valid BIO, and every mention is either tagged or counted."""
    rng = random.Random(7)
    pieces = [
        "Tumour",
        "α-cell",
        "IL-2R(alpha)",
        "e.g.",
        "Fig.",
        "2.",
        "cancer.",
        "In",
        "the",
        "\u00a0",
        "\t",
        "\r\n",
        "😀",
        "5'-UTR",
        "x\u200by",
        "BRCA1mutation",
        ".",
        "Dr.",
        "Smith",
        "3beta",
    ]
    for n in range(40):
        texts = [" ".join(rng.choice(pieces) for _ in range(rng.randint(1, 40))) for _ in range(2)]
        passages, offset = [], 3
        for text in texts:
            ms = []
            for _ in range(rng.randint(0, 6)):
                a = rng.randrange(len(text))
                b = rng.randint(a + 1, min(len(text), a + 30))
                ms.append(Mention(offset + a, offset + b, text[a:b], rng.choice(["Disease", "Gene"])))
            passages.append(Passage(offset, text, mentions=ms))
            offset += len(text) + rng.randint(1, 3)
        doc = Document(f"r{n}", passages, source="random")
        decisions = Decisions()
        out = labelled_sentences(doc, decisions)
        entities = 0
        for s, tags in out:
            _check_words(doc, [s])
            assert all(t == "O" or t[2:] in ("Disease", "Gene") for t in tags)
            assert all(not t.startswith("I-") or tags[k - 1][2:] == t[2:] for k, t in enumerate(tags) if k)
            assert tags[:1] != ["I-Disease"] and tags[:1] != ["I-Gene"]
            entities += len(spans(tags))
        assert entities == len(doc.mentions) - len(decisions.nested) - len(decisions.no_words)
        assert [s.passage for s, _ in out] == sorted(s.passage for s, _ in out)


def test_a_mention_over_three_sentences_joins_all_three_in_its_passage_only():
    title, abstract = "A title. Two.", "Risk of breast. Or. Ovarian cancer rose. Later fell."
    a = len(title) + 1 + abstract.index("breast")
    m = Mention(a, a + len("breast. Or. Ovarian cancer"), "breast. Or. Ovarian cancer", "Disease")
    doc = Document("t", [Passage(0, title), Passage(len(title) + 1, abstract, mentions=[m])], source="s")
    d = Decisions()
    out = labelled_sentences(doc, d)
    text = title + " " + abstract
    assert [(s.passage, text[s.start : s.end]) for s, _ in out] == [
        (0, "A title."),
        (0, "Two."),
        (1, "Risk of breast. Or. Ovarian cancer rose."),
        (1, "Later fell."),
    ]
    assert out[2][1] == [
        "O",
        "O",
        "B-Disease",
        "I-Disease",
        "I-Disease",
        "I-Disease",
        "I-Disease",
        "I-Disease",
        "O",
        "O",
    ]
    assert d.crossing == [f"s:t:{a}"]
