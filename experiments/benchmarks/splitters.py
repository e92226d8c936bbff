"""Sentence splitters measured against the NCBI-disease corpus's own sentence split.

The 593 PubTator abstracts of the NCBI-disease training set are, sentence-split and tokenised, the
IOB `NCBI-disease/train.tsv`: its tokens, found in order in the document texts, give the gold sentence
ends. Each splitter splits every passage (title, abstract) on its own, so the title/abstract break is
a boundary all get for free and is not scored. Figures: boundary precision / recall / F1 over the
passage-internal sentence ends, the fraction of documents split exactly like the gold, the NCBI
mentions that would cross a predicted boundary (each forces a join), and throughput (best of 3).

    PYTHONPATH=platform .venv/bin/python experiments/benchmarks/splitters.py [--out FILE]

pySBD (`pip install pysbd`) and spaCy's rule-based `sentencizer` (`pip install spacy`, no model) are
measured when importable, and left out of the table otherwise.
"""

from __future__ import annotations

import argparse
import difflib
import json
import platform
import re
import sys
import time
from collections.abc import Callable
from importlib import metadata
from itertools import pairwise
from pathlib import Path

from bioner.data.iob import iter_sentences
from bioner.data.sentences import split_sentences

REPO = Path(__file__).resolve().parents[2]
PUBTATOR = REPO / "experiments" / "corpora" / "NCBI-disease-PubTator" / "NCBItrainset_corpus.txt"
IOB = REPO / "experiments" / "corpora" / "NCBI-disease" / "train.tsv"

Spans = list[tuple[int, int]]


def read_pubtator(path: Path) -> list[dict]:
    """Documents as {pmid, title, abstract, mentions: [(start, end, text, class)]}, in file order."""
    docs: list[dict] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        head = line.split("|", 2)
        if len(head) == 3 and head[1] in ("t", "a") and head[0].isdigit():
            if head[1] == "t":
                docs.append({"pmid": head[0], "title": head[2], "abstract": "", "mentions": []})
            else:
                docs[-1]["abstract"] = head[2]
        elif line.strip():
            f = line.split("\t")
            if len(f) == 6:
                docs[-1]["mentions"].append((int(f[1]), int(f[2]), f[3], f[4]))
    for d in docs:
        d["text"] = d["title"] + " " + d["abstract"]
        d["passages"] = [(0, d["title"]), (len(d["title"]) + 1, d["abstract"])]
    return docs


def _compact(text: str) -> tuple[str, list[int]]:
    """The text's non-space characters, and the offset of each."""
    idx = [i for i, c in enumerate(text) if not c.isspace()]
    return "".join(text[i] for i in idx), idx


def _group(comps: dict[str, str], sentences: list[list[str]]) -> tuple[dict[str, list[int]], list[int]]:
    """The IOB sentences of each distinct document text (whatever the two files' orders), and those placed nowhere.

    A document starts at a sentence that begins a not yet placed text (the following sentences decide
    between texts that begin alike); later sentences continue it while they match its next characters,
    or, failing that, while it has characters left and no other text starts with them."""
    groups: dict[str, list[int]] = {}
    lost: list[int] = []
    cur, pos = None, 0
    for i, toks in enumerate(sentences):
        c = "".join(toks)
        if cur is not None and comps[cur].startswith(c, pos):
            groups[cur].append(i)
            pos += len(c)
            continue
        cands = [t for t in comps if t not in groups and comps[t].startswith(c)]
        ahead, j = c, i + 1
        while len(cands) > 1 and j < len(sentences):
            ahead += "".join(sentences[j])
            j += 1
            cands = [t for t in cands if comps[t].startswith(ahead)] or cands[:1]
        if cands:
            cur, pos = cands[0], len(c)
            groups[cur] = [i]
        elif cur is not None and pos < len(comps[cur]):
            groups[cur].append(i)
            pos += len(c)
        else:
            lost.append(i)
    return groups, lost


def gold_ends(docs: list[dict], sentences: list[list[str]]) -> tuple[dict[str, list[int]], dict]:
    """Gold sentence end offsets per distinct document text, and how well the tokens aligned."""
    comps = {d["text"]: _compact(d["text"]) for d in docs}
    groups, lost = _group({t: c for t, (c, _) in comps.items()}, sentences)
    ends: dict[str, list[int]] = {}
    bad_tokens = bad_sentences = differing_docs = 0
    for text, members in groups.items():
        b, idx = comps[text]
        a = "".join(t for i in members for t in sentences[i])
        if a == b:
            amap = list(range(len(a)))
        else:  # tokenisation differs: map the tokens' characters onto the text's where they match
            differing_docs += 1
            amap = [-1] * len(a)
            for x, y, n in difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks():
                amap[x : x + n] = range(y, y + n)
        ends[text], k = [], 0
        for i in members:
            for tok in sentences[i]:
                bad_tokens += any(amap[q] < 0 for q in range(k, k + len(tok)))
                k += len(tok)
            if amap[k - 1] < 0:
                bad_sentences += 1
            else:
                ends[text].append(idx[amap[k - 1]] + 1)
    stats = {
        "iob_sentences": len(sentences),
        "iob_tokens": sum(map(len, sentences)),
        "distinct_texts": len(comps),
        "texts_aligned": len(groups),
        "texts_with_other_tokenisation": differing_docs,
        "sentences_placed_nowhere": len(lost),
        "tokens_not_aligned": bad_tokens,
        "sentence_ends_not_aligned": bad_sentences,
    }
    return ends, stats


def internal_ends(doc: dict, ends_in_doc) -> set[int]:
    """Document offsets of sentence ends inside a passage, its final end left out (every splitter gets it)."""
    out = set()
    for off, text in doc["passages"]:
        last = off + len(text.rstrip())
        out.update(e for e in ends_in_doc if off < e < last)
    return out


def predicted_ends(doc: dict, split: Callable[[str], Spans]) -> set[int]:
    return internal_ends(doc, [off + e for off, text in doc["passages"] for _, e in split(text)])


# --- the splitters: text -> sentence (start, end) offsets, stripped of whitespace ---------------------

_RULE = re.compile(r"(?<=[.?!])\s+(?=[A-Z0-9])")


def regex_baseline(text: str) -> Spans:
    cuts = [0] + [m.end() for m in _RULE.finditer(text)] + [len(text)]
    return _stripped(text, pairwise(cuts))


def _stripped(text: str, spans) -> Spans:
    out = []
    for a, b in spans:
        piece = text[a:b]
        if piece.strip():
            s = a + len(piece) - len(piece.lstrip())
            out.append((s, s + len(piece.strip())))
    return out


def syntok_raw(text: str) -> Spans:
    from syntok import segmenter  # lazy (platform/README.md)

    out = []
    for paragraph in segmenter.analyze(text):
        for sentence in paragraph:
            toks = [t for t in sentence if t.value]
            if toks:
                out.append((toks[0].offset, toks[-1].offset + len(toks[-1].value)))
    return out


def splitters() -> dict[str, Callable[[str], Spans]]:
    found = {
        "regex baseline ([.?!] + space + capital/digit)": regex_baseline,
        f"syntok {metadata.version('syntok')} (segmenter.analyze)": syntok_raw,
        "bioner split_sentences (syntok, offsets checked)": split_sentences,
    }
    try:
        import pysbd  # optional: left out when not installed

        seg = pysbd.Segmenter(language="en", clean=False, char_span=True)
        found[f"pySBD {metadata.version('pysbd')} (char_span)"] = lambda t: _stripped(
            t, [(s.start, s.end) for s in seg.segment(t)]
        )
    except ImportError:
        print("pySBD not installed: left out", file=sys.stderr)
    try:
        import spacy  # optional: left out when not installed

        nlp = spacy.blank("en")
        nlp.add_pipe("sentencizer")
        found[f"spaCy {spacy.__version__} sentencizer (blank en)"] = lambda t: _stripped(
            t, [(s.start_char, s.end_char) for s in nlp(t).sents]
        )
    except ImportError:
        print("spaCy not installed: left out", file=sys.stderr)
    return found


def crossing(doc: dict, ends: set[int]) -> int:
    """Mentions of the document with a sentence end strictly inside them."""
    return sum(any(s < b < e for b in ends) for s, e, _, _ in doc["mentions"])


def measure(name: str, split, docs: list[dict], gold: list[set[int]], repeats: int) -> dict:
    pred = [predicted_ends(d, split) for d in docs]
    tp = sum(len(p & g) for p, g in zip(pred, gold, strict=True))
    n_pred, n_gold = sum(map(len, pred)), sum(map(len, gold))
    prec, rec = tp / max(n_pred, 1), tp / max(n_gold, 1)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for d in docs:
            for _, text in d["passages"]:
                split(text)
        best = min(best, time.perf_counter() - t0)
    chars = sum(len(text) for d in docs for _, text in d["passages"])
    return {
        "splitter": name,
        "precision": prec,
        "recall": rec,
        "f1": 2 * prec * rec / max(prec + rec, 1e-12),
        "predicted_boundaries": n_pred,
        "correct_boundaries": tp,
        "docs_exact": sum(p == g for p, g in zip(pred, gold, strict=True)) / len(docs),
        "mentions_crossing": sum(crossing(d, p) for d, p in zip(docs, pred, strict=True)),
        "docs_per_s": len(docs) / best,
        "chars_per_s": chars / best,
    }


def table(gold: dict, rows: list[dict]) -> str:
    lines = [
        f"Gold: {gold['documents']} documents ({gold['distinct_texts']} distinct texts), "
        f"{gold['internal_boundaries']} passage-internal sentence ends, {gold['mentions']} mentions, "
        f"{gold['mentions_crossing']} crossing a gold sentence end; not aligned: {gold['tokens_not_aligned']} "
        f"tokens, {gold['sentence_ends_not_aligned']} sentence ends, "
        f"{gold['sentences_placed_nowhere']} sentences.",
        "",
        "| splitter | boundary P | boundary R | boundary F1 | docs split exactly as gold | mentions crossing "
        "| docs/s | chars/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['splitter']} | {r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} | "
            f"{r['docs_exact']:.3f} | {r['mentions_crossing']} | {r['docs_per_s']:,.0f} "
            f"| {r['chars_per_s']:,.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pubtator", type=Path, default=PUBTATOR, help="the NCBI-disease training set as PubTator")
    p.add_argument("--iob", type=Path, default=IOB, help="the same abstracts as IOB sentences")
    p.add_argument("--repeats", type=int, default=3, help="timed passes over all documents; the best counts")
    p.add_argument("--out", type=Path, help="write the figures as JSON here too")
    args = p.parse_args()
    docs = read_pubtator(args.pubtator)
    sentences = [toks for toks, _ in iter_sentences(args.iob, ["Disease"])]
    ends, stats = gold_ends(docs, sentences)
    gold = [internal_ends(d, ends.get(d["text"], [])) for d in docs]
    stats.update(
        documents=len(docs),
        internal_boundaries=sum(map(len, gold)),
        mentions=sum(len(d["mentions"]) for d in docs),
        mentions_crossing=sum(crossing(d, g) for d, g in zip(docs, gold, strict=True)),
        mentions_crossing_passages=sum(s < len(d["title"]) < e for d in docs for s, e, _, _ in d["mentions"]),
    )
    rows = [measure(name, split, docs, gold, args.repeats) for name, split in splitters().items()]
    print(table(stats, rows))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        figures = {
            "gold": stats,
            "splitters": rows,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "processor": platform.processor(),
        }
        args.out.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
