"""bioner's document scores against the official BioCreative V CDR evaluator's mention scores.

The evaluator (BC5CDR_Evaluation-0.0.3, a Java jar distributed with the BioCreative V CDR corpus;
not part of this project) is run beside bioner on the same files:

1. its own sample: gold `data/gold/CDR_sample.gold.PubTator` against the baseline predictions
   `data/test/CDR_sample.test.DNER.PubTator`, for Disease and Chemical mentions;
2. a model's predictions on a spec of documents (default: the 60 held-out NCBI abstracts): the gold
   and the predicted documents written as PubTator, scored by the jar, and by `bioner evaluate --json`.

    PYTHONPATH=platform .venv/bin/python experiments/benchmarks/cdr_evaluator.py --evaluator DIR [--model M]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bioner.data.doc_corpus import gold_documents
from bioner.data.formats import open_writer, read_documents
from bioner.data.specs import load_spec
from bioner.infer.documents import annotate, count_mentions
from bioner.infer.tagger import Tagger


def jar_scores(evaluator: Path, typ: str, gold: Path, pred: Path) -> dict[str, int]:
    """TP, FP and FN as the evaluator prints them (`mention TYPE PubTator GOLD PRED`)."""
    out = subprocess.run(
        [
            "java",
            "-cp",
            str(evaluator / "bc5cdr_eval.jar"),
            "ncbi.bc5cdr_eval.Evaluate",
            "mention",
            typ,
            "PubTator",
            str(gold),
            str(pred),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    fields = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line and not line.startswith("INFO"))
    return {k.lower(): int(fields[k]) for k in ("TP", "FP", "FN")}


def ours(gold, pred, typ: str) -> dict[str, int]:
    s = count_mentions(gold, pred, [typ]).scores()["per_type"][typ]
    return {k: s[k] for k in ("tp", "fp", "fn")}


def write_pubtator(path: Path, docs) -> Path:
    with open_writer(path, "pubtator") as w:
        for d in docs:
            w.write(d)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--evaluator", type=Path, required=True, help="the unpacked BC5CDR_Evaluation-0.0.3 folder")
    ap.add_argument("--model", help="a model folder: also compare on its predictions of --dataset's --split")
    ap.add_argument("--dataset", default="ncbi-disease-pubtator")
    ap.add_argument("--split", default="test")
    args = ap.parse_args()
    rows = []
    gold_f = args.evaluator / "data/gold/CDR_sample.gold.PubTator"
    pred_f = args.evaluator / "data/test/CDR_sample.test.DNER.PubTator"
    gold, pred = list(read_documents(gold_f, "pubtator")), list(read_documents(pred_f, "pubtator"))
    for typ in ("Disease", "Chemical"):
        rows.append((f"CDR sample, {typ}", jar_scores(args.evaluator, typ, gold_f, pred_f), ours(gold, pred, typ)))
    if args.model:
        spec = load_spec(args.dataset)
        docs = list(gold_documents(spec, args.split))
        predicted = annotate(Tagger.load(args.model), [d.without_mentions() for d in docs])
        with tempfile.TemporaryDirectory() as tmp:
            g, p = (
                write_pubtator(Path(tmp) / "gold.pubtator", docs),
                write_pubtator(Path(tmp) / "pred.pubtator", predicted),
            )
            for typ in spec.types:
                rows.append(
                    (
                        f"{spec.name} {args.split}, {typ}: written out",
                        jar_scores(args.evaluator, typ, g, p),
                        ours(docs, predicted, typ),
                    )
                )
        cli = subprocess.run(
            [
                sys.executable,
                "-m",
                "bioner.cli",
                "evaluate",
                "--model",
                args.model,
                "--dataset",
                args.dataset,
                "--split",
                args.split,
                "--json",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        report = json.loads(cli.stdout)["per_type"]
        for typ in spec.types:
            rows.append(
                (
                    f"{spec.name} {args.split}, {typ}: bioner evaluate --json",
                    rows[-len(spec.types)][1],
                    {k: report[typ][k] for k in ("tp", "fp", "fn")},
                )
            )
    print("| files | evaluator TP / FP / FN | bioner TP / FP / FN | equal |\n|---|---|---|---|")
    for name, a, b in rows:
        print(
            f"| {name} | {a['tp']} / {a['fp']} / {a['fn']} | {b['tp']} / {b['fp']} / {b['fn']} | "
            f"{'yes' if a == b else 'NO'} |"
        )
    if any(a != b for _, a, b in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
