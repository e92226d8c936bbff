"""Encoder positions an epoch feeds, single task against multi-task with every type or k per sentence.

On a CPU the step time of the multi-task model follows the tokens it encodes (experiments/benchmarks/README.md,
"Results"), so the count below is the epoch's cost
without training a model. With k types drawn per sentence the MRC rows of a sentence are k of its
annotated types; the count is the expectation over the draw (the mean row length of the sentence).

    PYTHONPATH=platform python experiments/composite/type_cost.py bionlp13pc ncbi-disease --k 1 2
"""

from __future__ import annotations

import argparse
import statistics

from bioner.config import TrainConfig
from bioner.data.features import FeatureBuilder
from bioner.data.job import load_job_data
from bioner.model import load_tokenizer


def positions(dataset: str, encoder: str, query_source: str, max_length: int, ks: list[int]) -> dict:
    cfg = TrainConfig(
        dataset=dataset,
        encoder=encoder,
        query_source=query_source,
        max_length=max_length,
        beta=1.0,
        train_splits=["train"],
        train_fraction=1.0,
    )
    data = load_job_data(cfg)
    tok = load_tokenizer(encoder)
    enc = FeatureBuilder(tok, data.spec.labels, max_length, data.queries, data.spec.types).encode(
        data.train.tokens, data.train.tags, mrc=True, annotated=data.train.annotated
    )
    ner = sum(len(r) for r in enc.ner_ids)
    out = {"types": len(data.spec.types), "sentences": len(data.train), "single task": ner}
    out["multi-task, every type"] = ner + sum(len(enc.mrc_ids[r]) for rows in enc.mrc_of for r in rows)
    for k in ks:
        mrc = sum(
            min(k, len(rows)) * statistics.fmean(len(enc.mrc_ids[r]) for r in rows) for rows in enc.mrc_of if rows
        )
        out[f"multi-task, k = {k}"] = ner + round(mrc)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("datasets", nargs="+", help="dataset names or spec paths")
    p.add_argument("--k", type=int, nargs="*", default=[1], help="types drawn per sentence (mrc_types_per_sentence)")
    p.add_argument("--encoder", default="minilm", help="whose tokenizer counts the pieces")
    p.add_argument("--query-source", default="annotation", help="which queries (the longest are the annotation ones)")
    p.add_argument("--max-length", type=int, default=256, help="longest encoder input")
    args = p.parse_args(argv)
    print("| dataset | types | training sentences | system | encoder positions an epoch | / single task |")
    print("|---|---|---|---|---|---|")
    for ds in args.datasets:
        res = positions(ds, args.encoder, args.query_source, args.max_length, args.k)
        base = res["single task"]
        for system, n in res.items():
            if system not in ("types", "sentences"):
                print(f"| {ds} | {res['types']} | {res['sentences']:,} | {system} | {n:,} | {n / base:.2f}x |")


if __name__ == "__main__":
    main()
