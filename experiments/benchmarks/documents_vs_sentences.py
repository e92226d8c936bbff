"""Tagging whole documents against tagging the corpus's own gold sentences, on held-out NCBI abstracts.

The NCBI-disease training set is both PubTator documents and the IOB `NCBI-disease/train.tsv`
(sentence-split and tokenised). A model trained on the `ncbi-disease-pubtator` spec's train documents
(experiments/documents.yaml) has never seen its 60 test documents; their sentences are found in
train.tsv by their characters (splitters.py). The same model then tags the same text four ways, each
scored by exact character span and type against the PubTator mentions (infer.documents.count_mentions):

- gold sentences: the IOB sentences and tokens, predictions moved to document offsets;
- documents: what `bioner predict --format` and `bioner evaluate` do (syntok sentences, corpus words);
- one text per passage, and one text per document: the glue a user writes without documents
  (a title and an abstract, or title + " " + abstract, sent as raw text, windowed at max_length).

The IOB sentences are also scored as `bioner evaluate` scores IOB corpora (strict IOB2 spans).

    PYTHONPATH=platform .venv/bin/python experiments/benchmarks/documents_vs_sentences.py --model DIR [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bioner.data.doc_corpus import gold_documents
from bioner.data.documents import Document, Mention
from bioner.data.iob import iter_sentences
from bioner.data.specs import load_spec
from bioner.data.tags import spans
from bioner.infer.documents import annotate, count_mentions
from bioner.infer.metrics import score
from bioner.infer.tagger import Tagger

sys.path.insert(0, str(Path(__file__).resolve().parent))
from splitters import _compact, _group  # noqa: E402  (the alignment the splitter table uses)

REPO = Path(__file__).resolve().parents[2]
IOB = REPO / "experiments" / "corpora" / "NCBI-disease" / "train.tsv"


def gold_sentences(docs: list[Document]) -> dict[str, list[tuple[list[str], list[str], list[tuple[int, int]]]]]:
    """Per document: its IOB sentences as (tokens, tags, document offsets of each token)."""
    sentences = list(iter_sentences(IOB, ["Disease"]))
    texts = {d.id: " ".join(p.text for p in d.passages) for d in docs}  # title + " " + abstract: the document's text
    comps = {t: _compact(t) for t in texts.values()}
    groups, _ = _group({t: c for t, (c, _) in comps.items()}, [toks for toks, _ in sentences])
    out = {}
    for doc_id, text in texts.items():
        compact, idx = comps[text]
        k, found = 0, []
        for i in groups.get(text, []):
            toks, tags = sentences[i]
            offs = []
            for t in toks:
                if compact[k : k + len(t)] != t:
                    raise SystemExit(f"document {doc_id}: IOB token {t!r} does not match the text")
                offs.append((idx[k], idx[k + len(t) - 1] + 1))
                k += len(t)
            found.append((toks, tags, offs))
        if k != len(compact):
            raise SystemExit(f"document {doc_id}: its IOB sentences cover {k} of {len(compact)} characters")
        out[doc_id] = found
    return out


def by_gold_sentences(tagger: Tagger, docs: list[Document], gold: dict) -> tuple[list[Document], dict]:
    rows = [(d, s) for d in docs for s in gold[d.id]]
    tags = tagger.tag([toks for _, (toks, _, _) in rows])
    pred = [d.without_mentions() for d in docs]
    by_id = {d.id: d for d in pred}
    for (d, (_, _, offs)), t in zip(rows, tags, strict=True):
        doc = by_id[d.id]
        for typ, a, b in spans(t):
            start, end = offs[a][0], offs[b - 1][1]
            doc.passage_at(start, end).mentions.append(Mention(start, end, doc.text_at(start, end), typ))
    iob = score([g for _, (_, g, _) in rows], tags, ["Disease"])
    return pred, {"iob_f1_seqeval": iob["f1"], "sentences": len(rows)}


def by_raw_text(tagger: Tagger, docs: list[Document], per_passage: bool) -> list[Document]:
    pred = [d.without_mentions() for d in docs]
    for d in pred:
        units = [(p.offset, p.text) for p in d.passages] if per_passage else [(0, " ".join(p.text for p in d.passages))]
        for (offset, _), ents in zip(units, tagger.entities([t for _, t in units]), strict=True):
            for e in ents:
                start, end = offset + e["start"], offset + e["end"]
                p = d.passage_at(start, end)
                if p is not None:  # a mention across the title/abstract break: no gold can equal it
                    p.mentions.append(Mention(start, end, e["text"], e["type"]))
    return pred


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a model folder trained on the ncbi-disease-pubtator train split")
    ap.add_argument("--split", default="test", help="documents to score (default: test, 60 held-out abstracts)")
    ap.add_argument("--precision", default="fp32", help="fp32 (as bioner evaluate) or int8")
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args()
    spec = load_spec("ncbi-disease-pubtator")
    docs = list(gold_documents(spec, args.split))
    tagger = Tagger.load(args.model, precision=args.precision)
    gold = gold_sentences(docs)
    rows = {}
    t0 = time.perf_counter()
    pred, extra = by_gold_sentences(tagger, docs, gold)
    rows["gold sentences (IOB tokens)"] = (pred, time.perf_counter() - t0)
    t0 = time.perf_counter()
    rows["documents (syntok sentences): bioner"] = (
        annotate(tagger, [d.without_mentions() for d in docs]),
        time.perf_counter() - t0,
    )
    for per_passage, name in ((True, "one raw text per passage"), (False, "one raw text per document")):
        t0 = time.perf_counter()
        rows[name] = (by_raw_text(tagger, docs, per_passage), time.perf_counter() - t0)
    result = {"documents": len(docs), "gold_mentions": sum(len(d.mentions) for d in docs), **extra, "rows": {}}
    print(
        f"{len(docs)} documents, {result['gold_mentions']} gold mentions; IOB gold sentences scored as IOB "
        f"(seqeval): F1 {100 * extra['iob_f1_seqeval']:.2f}"
    )
    print("| tagged as | P | R | F1 (exact span, per document) | seconds |\n|---|---|---|---|---|")
    for name, (pred, secs) in rows.items():
        s = count_mentions(docs, pred, ["Disease"]).scores()
        result["rows"][name] = {k: s[k] for k in ("precision", "recall", "f1")} | {"seconds": secs}
        print(f"| {name} | {100 * s['precision']:.2f} | {100 * s['recall']:.2f} | {100 * s['f1']:.2f} | {secs:.1f} |")
    gap = (
        result["rows"]["documents (syntok sentences): bioner"]["f1"]
        - result["rows"]["gold sentences (IOB tokens)"]["f1"]
    )
    print(f"documents - gold sentences: {100 * gap:+.2f} F1")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
