"""int8 recipes side by side on one trained model, one thread, over a corpus's test sentences: the
recipe of bioner.infer.int8 (export, then dynamic quantisation with each layer's second feed-forward
product kept fp32) against ONNX Runtime's BERT graph fusions applied first; sentences/s at batch 1 and
32 and how many sentences get the same tags as fp32. Then where the Tagger's own time goes (cProfile).

    PYTHONPATH=platform python experiments/benchmarks/int8_recipes.py outputs/models/<run_id> ncbi-disease
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import pstats
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.optimizer import optimize_model

from bioner.data.iob import read_split
from bioner.data.specs import load_spec
from bioner.infer.int8 import FP32_NODES, _export
from bioner.infer.tagger import Tagger
from bioner.model.io import load_model


def quantise(src: Path, dst: Path) -> None:
    keep = [n.name for n in onnx.load(str(src)).graph.node if FP32_NODES.search(n.name)]
    quantize_dynamic(
        str(src),
        str(dst),
        weight_type=QuantType.QInt8,
        per_channel=True,
        nodes_to_exclude=keep,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )  # fused ops have no inferred types


def batches(enc: list[list[int]], size: int):
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
    for s in range(0, len(order), size):
        idx = order[s : s + size]
        width = max(len(enc[i]) for i in idx)
        ids, mask = np.zeros((len(idx), width), np.int64), np.zeros((len(idx), width), np.int64)
        for r, i in enumerate(idx):
            ids[r, : len(enc[i])], mask[r, : len(enc[i])] = enc[i], 1
        yield idx, ids, mask


def tags(path: Path, enc: list[list[int]], size: int) -> tuple[float, dict]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    for _, ids, mask in list(batches(enc, size))[:3]:  # warm-up
        session.run(None, {"input_ids": ids, "attention_mask": mask})
    out, t0 = {}, time.perf_counter()
    for idx, ids, mask in batches(enc, size):
        logits = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        for r, i in enumerate(idx):
            out[i] = logits[r, : len(enc[i])].argmax(-1)
    return len(enc) / (time.perf_counter() - t0), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="a bioner model folder")
    p.add_argument("dataset", help="a dataset spec name or path: its test sentences")
    args = p.parse_args()
    torch.set_num_threads(1)
    logging.getLogger().setLevel(logging.ERROR)
    model, tok, _ = load_model(args.model)
    texts = [" ".join(t) for t in read_split(load_spec(args.dataset), "test").tokens]
    enc = [tok(t.split(), is_split_into_words=True, truncation=True, max_length=128)["input_ids"] for t in texts]
    tmp = Path(tempfile.mkdtemp())
    fp32, fused = tmp / "fp32.onnx", tmp / "fused.onnx"
    _export(model.cpu().eval(), torch.ones((2, 8), dtype=torch.long), fp32)
    cfg = model.encoder.config
    opt = optimize_model(str(fp32), model_type="bert", num_heads=cfg.num_attention_heads, hidden_size=cfg.hidden_size)
    print("fusions found:", {k: v for k, v in opt.get_fused_operator_statistics().items() if v})
    opt.save_model_to_file(str(fused))
    quantise(fp32, tmp / "int8.onnx")
    quantise(fused, tmp / "int8-fused.onnx")
    found = {}
    for name in ("fp32", "fused", "int8", "int8-fused"):
        for size in (1, 32):
            rate, found[name] = tags(tmp / f"{name}.onnx", enc, size)
            print(f"{name:10s} batch {size:2d}: {rate:6.1f} sentences/s (one thread)")
    for name in ("fused", "int8", "int8-fused"):
        same = sum(np.array_equal(found[name][i], found["fp32"][i]) for i in range(len(enc)))
        print(f"{name}: the tags of fp32 on {same}/{len(enc)} sentences")
    tagger = Tagger.load(args.model, batch_size=64, precision="int8")
    tagger.entities(texts[:64])
    prof = cProfile.Profile()
    prof.enable()
    for s in range(0, len(texts), 64):
        tagger.entities(texts[s : s + 64])
    prof.disable()
    stats = pstats.Stats(prof)
    total = stats.total_tt
    ort_s = sum(v[3] for k, v in stats.stats.items() if k[2] == "run" and "onnxruntime" in k[0])
    print(
        f"Tagger.entities in requests of 64, int8: {len(texts) / total:.1f} sentences/s under cProfile, "
        f"{100 * ort_s / total:.0f} % of the time in ONNX Runtime's run"
    )


if __name__ == "__main__":
    main()
