"""Trials per hour of `bioner tune` at paper settings on 1, 8 and 32 GPUs, from one throughput figure.

    .venv/bin/python cluster/scale_table.py --tokens-per-s 115000 --overhead-s 60 --checkpoint-s 3

The throughput is padded tokens per second of BERT-base training on one GPU; measure it on your
GPU (`bioner bench`, or a one-epoch `bioner train` on it: sentences_per_s in MLflow times the
padded tokens per sentence printed here) and pass it in. Everything else is counted from the
corpora: sentences, WordPiece lengths (BERT's uncased vocabulary, offline), the padding of
random batches of 32, and the MRC query that multi-task training adds as a second pass.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics

from bioner.data.iob import read_split
from bioner.data.specs import load_spec
from bioner.model import load_tokenizer

PAPER_EPOCHS = {"ncbi-disease": 100, "bc5cdr-chem": 50, "bc2gm": 50}  # METHOD.md
PARAMS = 110e6  # BERT-base / BioBERT-base


def padded_length(lengths: list[int], batch: int, rng: random.Random, draws: int = 2000) -> float:
    """Mean length of a random batch padded to its longest row, rounded up to 8 as on GPU."""
    return statistics.fmean(math.ceil(max(rng.sample(lengths, batch)) / 8) * 8 for _ in range(draws))


def asha_epochs(max_t: int, grace: int = 1, eta: int = 2) -> float:
    """Expected epochs of a trial under ASHA: a fraction eta**-k of the trials reaches rung k."""
    expected, prev, k = float(grace), grace, 1
    while prev < max_t:
        rung = min(grace * eta**k, max_t)
        expected += (rung - prev) / eta**k
        prev, k = rung, k + 1
    return expected


def epoch_seconds(name: str, tok, tokens_per_s: float, batch: int = 32) -> tuple[float, dict]:
    rng = random.Random(0)
    spec = load_spec(name)
    query = next(iter(spec.entity_types.values())).annotation  # the paper's query source
    q = len(tok(query, add_special_tokens=False)["input_ids"]) + 1  # the query and its [SEP]
    train = [len(x) for x in tok(read_split(spec, "train").tokens, is_split_into_words=True)["input_ids"]]
    devel = [len(x) for x in tok(read_split(spec, "devel").tokens, is_split_into_words=True)["input_ids"]]
    ner, mrc = padded_length(train, batch, rng), padded_length([n + q for n in train], batch, rng)
    train_tokens = len(train) * (ner + mrc)  # one NER and one MRC row per sentence and type
    devel_tokens = len(devel) * padded_length(devel, 64, rng)
    # Scoring devel after every epoch is a forward pass: 2 of the 6 FLOPs per parameter and token.
    seconds = train_tokens / tokens_per_s + devel_tokens / (3 * tokens_per_s)
    return seconds, {"train": len(train), "devel": len(devel), "ner": ner, "mrc": mrc, "tokens": train_tokens}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--tokens-per-s",
        type=float,
        default=115e3,
        help="padded training tokens per second on one GPU (assumed A100 bf16 figure by default)",
    )
    ap.add_argument(
        "--overhead-s",
        type=float,
        default=60,
        help="per-trial start-up: worker process, CUDA, loading the encoder and corpus",
    )
    ap.add_argument(
        "--checkpoint-s", type=float, default=3, help="per-epoch checkpoint of the 440 MB model to shared storage"
    )
    ap.add_argument("--grace-period", type=int, default=1, help="ASHA grace period (TuneConfig.grace_period)")
    a = ap.parse_args()
    tok = load_tokenizer("minilm")  # BERT's uncased WordPiece vocabulary; BioBERT's cased one splits a bit more
    print(
        "| dataset | train / devel sentences | padded tokens per sentence (NER + MRC) | epoch | paper epochs | "
        "E[epochs] under ASHA | 1 GPU | 8 GPUs | 32 GPUs |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, max_t in PAPER_EPOCHS.items():
        t, s = epoch_seconds(name, tok, a.tokens_per_s)
        e = asha_epochs(max_t, a.grace_period)
        full = a.overhead_s + max_t * (t + a.checkpoint_s)
        cut = a.overhead_s + e * (t + a.checkpoint_s)
        cells = [f"{g * 3600 / full:.1f} / {g * 3600 / cut:.0f}" for g in (1, 8, 32)]
        print(
            f"| {name} | {s['train']:,} / {s['devel']:,} | {s['ner']:.0f} + {s['mrc']:.0f} | {t:.1f} s | "
            f"{max_t} | {e:.2f} | " + " | ".join(cells) + " |"
        )


if __name__ == "__main__":
    main()
