"""int8 on a CPU, the two candidates side by side on one trained model: ONNX Runtime's dynamic
quantisation (bioner's recipe, bioner.infer.int8) against torch's own dynamic quantisation
(`torch.ao.quantization.quantize_dynamic` on the Linear layers, with the same layers kept fp32, and
with none kept). Each system tags the dataset's test texts through bioner's Tagger (the same words,
windows, batches and decoding; only the NER forward differs): sentences/s (best of --repeats), test F1,
and on how many test texts it finds exactly the entities of fp32.

    PYTHONPATH=platform python experiments/benchmarks/int8_torch_vs_ort.py outputs/models/<run_id> ncbi-disease
"""

from __future__ import annotations

import argparse
import copy
import logging
import re
import time
import warnings
from pathlib import Path

import torch

from bioner.data.iob import read_split
from bioner.data.specs import load_spec
from bioner.infer.int8 import Int8Ner
from bioner.infer.metrics import score
from bioner.infer.tagger import Tagger
from bioner.model.io import load_model

# torch module names of the layers bioner's ONNX recipe keeps fp32 (infer.int8.FP32_NODES): each
# layer's second feed-forward product
KEEP_FP32 = re.compile(r"layer\.\d+\.output\.dense$")


def torch_int8(model: torch.nn.Module, keep_fp32: bool) -> torch.nn.Module:
    names = {
        n
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and not (keep_fp32 and KEEP_FP32.search(n))
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch 2.13: torch.ao.quantization is deprecated (the point of the comparison)
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), names, dtype=torch.qint8)


def timed(tagger: Tagger, texts: list[str], repeats: int) -> tuple[float, list]:
    tagger.entities(texts[:64])  # warm-up: kernels, the int8 graph's first runs
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = tagger.entities(texts)
        best = min(best, time.perf_counter() - t0)
    return len(texts) / best, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="a bioner model folder (trained: agreement on a random head means nothing)")
    p.add_argument("dataset", help="a dataset spec name or path: its test split is tagged and scored")
    p.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="intra-op threads for every system (default: torch's)",
    )
    p.add_argument(
        "--repeats", type=int, default=2, help="timed passes over the test texts per system; the fastest counts"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger().setLevel(logging.ERROR)
    model, tok, meta = load_model(args.model)
    spec = load_spec(args.dataset)
    test = read_split(spec, "test")
    texts = [" ".join(t) for t in test.tokens]
    systems = {
        "fp32": None,
        "int8, ONNX Runtime (bioner's recipe)": Int8Ner(model, args.model, threads=args.threads),
        "int8, torch.ao dynamic, same layers fp32": torch_int8(model, keep_fp32=True).ner_logits,
        "int8, torch.ao dynamic, every Linear": torch_int8(model, keep_fp32=False).ner_logits,
    }
    rows, reference = [], None
    for name, ner_logits in systems.items():
        tagger = Tagger(model, tok, meta, "cpu", 64, ner_logits)
        rate, ents = timed(tagger, texts, args.repeats)
        f1 = score(test.tags, tagger.tag(test.tokens), spec.types)["f1"]
        sets = [sorted((e["start"], e["end"], e["type"]) for e in es) for es in ents]
        reference = reference or sets
        same = sum(a == b for a, b in zip(sets, reference, strict=True))
        rows.append((name, rate, f1, same))
        print(
            f"{name}: {rate:.1f} sentences/s, test F1 {f1:.4f}, same entities as fp32 on {same} / {len(texts)} texts",
            flush=True,
        )
    print(f"\n{args.model} on {spec.name}, {len(texts)} test texts, {args.threads} thread(s)\n")
    print("| system | sentences/s | vs fp32 | test F1 | same entities as fp32 |\n|---|---|---|---|---|")
    for name, rate, f1, same in rows:
        print(
            f"| {name} | {rate:.1f} | {rate / rows[0][1]:.2f}x | {f1 * 100:.2f} | {same} / {len(texts)} "
            f"({same / len(texts):.1%}) |"
        )


if __name__ == "__main__":
    main()
