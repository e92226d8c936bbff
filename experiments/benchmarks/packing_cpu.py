"""What building one packed step costs on the CPU: first-fit decreasing of a random batch of the
dataset's training sentences into rows, the forwards' chunks, and the packed NER tensors (what
`bioner.train.step.Step` does before each forward on a GPU).

    PYTHONPATH=platform python experiments/benchmarks/packing_cpu.py [--dataset ncbi-disease] [--batch 1024]
"""

from __future__ import annotations

import argparse
import random
import time

from bioner.config import TrainConfig
from bioner.data.features import FeatureBuilder
from bioner.data.job import load_job_data
from bioner.data.packing import balanced_chunks, first_fit, packed_ner_batch
from bioner.model import load_tokenizer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="ncbi-disease", help="dataset spec (name or path): its training sentences")
    p.add_argument("--encoder", default="minilm", help="tokenizer to encode with")
    p.add_argument("--batch", type=int, default=1024, help="sentences per step")
    p.add_argument("--row-len", type=int, default=128, help="positions per packed row (the longest input)")
    p.add_argument(
        "--forward-rows", type=int, default=128, help="packed rows per forward (micro-batch positions / row length)"
    )
    p.add_argument("--repeats", type=int, default=5, help="timed steps; each figure is their median")
    args = p.parse_args()
    cfg = TrainConfig(dataset=args.dataset, encoder=args.encoder, max_length=args.row_len, beta=0.0)
    data = load_job_data(cfg)
    tok = load_tokenizer(args.encoder)
    enc = FeatureBuilder(tok, data.spec.labels, args.row_len).encode(data.train.tokens, data.train.tags)
    lengths = [len(r) for r in enc.ner_ids]
    fit_ms, build_ms = [], []
    for k in range(args.repeats):
        idx = random.Random(k).sample(range(len(lengths)), min(args.batch, len(lengths)))
        t0 = time.perf_counter()
        rows = first_fit(sorted(idx, key=lambda r: -lengths[r]), lengths, args.row_len)[0]
        chunks = balanced_chunks(rows, args.forward_rows)
        t1 = time.perf_counter()
        for c in chunks:
            packed_ner_batch(enc, c, args.row_len, tok.pad_token_id)
        t2 = time.perf_counter()
        fit_ms.append(1e3 * (t1 - t0))
        build_ms.append(1e3 * (t2 - t1))
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    print(
        f"{args.batch} sentences of {data.spec.name} -> {len(rows)} rows of {args.row_len} in {len(chunks)} "
        f"forward(s): first fit {med(fit_ms):.1f} ms, packed tensors {med(build_ms):.1f} ms (medians of "
        f"{args.repeats})"
    )


if __name__ == "__main__":
    main()
