"""Where a tiny Ray Train fit spends its time (the fixed cost every trial and test pays).

    PYTHONPATH=platform:tests python experiments/benchmarks/fit_overhead.py [--fits 2]
    # Ray's default poll:
    RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=2 PYTHONPATH=platform:tests python experiments/benchmarks/fit_overhead.py

A 2-layer BERT (hidden 32) on 48 synthetic sentences, one epoch: the training itself takes about a
second; the rest is Ray Train starting its controller and worker, the worker's first imports, and
noticing the end.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path


def timed_loop(job, log: str) -> None:
    t0 = time.time()
    from bioner.train.worker import train_loop_per_worker

    train_loop_per_worker(job)
    with open(log, "a") as f:
        f.write(f"{t0} {time.time()}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fits", type=int, default=2, help="fits in one Ray (the first also pays one-off imports)")
    args = ap.parse_args()

    import torch
    from transformers import BertConfig, BertModel

    from bioner.config import TrainConfig
    from bioner.model import load_tokenizer
    from bioner.train.driver import fit, worker_job
    from bioner.train.local_ray import start_local_ray
    from helpers import synthetic_corpus, write_spec  # tests/helpers.py: the suite's synthetic corpus

    d = Path(tempfile.mkdtemp(prefix="fit-overhead-"))
    synthetic_corpus(d / "corpus", sizes=(48, 16, 16))
    spec = write_spec(d / "synth.yaml", "corpus", name="synth")
    tok = load_tokenizer("minilm")
    torch.manual_seed(0)
    BertModel(
        BertConfig(
            vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
        )
    ).save_pretrained(d / "tiny")
    tok.save_pretrained(d / "tiny")
    start_local_ray(num_cpus=2, logging_level="ERROR", log_to_driver=False)
    log = str(d / "times.txt")
    for i in range(args.fits):
        cfg = TrainConfig(
            dataset=str(spec),
            encoder=str(d / "tiny"),
            epochs=1,
            batch_size=8,
            max_length=48,
            output_dir=str(d / f"out{i}"),
            experiment="fit-overhead",
        )
        job = worker_job(cfg, None, None, False)
        t = time.time()
        fit(job, f"fit{i}", d / "ray", loop=functools.partial(timed_loop, job, log))
        end = time.time()
        start, loop_end = map(float, open(log).read().splitlines()[-1].split())
        print(
            f"fit {i}: {end - t:.1f} s = {start - t:.1f} s until the worker runs + {loop_end - start:.1f} s in the "
            f"loop (set-up, imports, training) + {end - loop_end:.1f} s until the driver sees the end"
        )


if __name__ == "__main__":
    main()
