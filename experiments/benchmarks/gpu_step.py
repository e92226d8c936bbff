"""GPU training steps without Ray or MLflow: bioner's own Step against the plain Hugging Face recipe.

The GPU machines this project borrows have PyTorch and transformers but no Ray, no MLflow and no
network, so `bioner bench train` (which runs through Ray Train) cannot run there. This script
drives the very objects a Ray Train worker builds (bioner.train.step.Step, the length-grouped
sampler, the fused AdamW of bioner.train.worker) in one process, on a randomly initialised
encoder of a standard geometry built from a config, and times them against the HF recipe
(BertForTokenClassification, random batches padded to their longest sentence as
DataCollatorForTokenClassification does, AdamW), in fp32 (the Trainer's default) and in bf16
autocast (Trainer bf16=True). With `--suite mfu` it measures model FLOP utilisation at max length
128 instead: large steps (1,024 sentences), bioner's micro-batched step against the padded HF
recipe, and padding-free packing
(sentences end to end in fixed rows, block-diagonal attention: SDPA with a 4D mask, or flex
attention; bioner.bench.packing), eager and compiled, after checking that a packed forward
gives each sentence what it gets alone. The default suite (`steps`) also checks on the GPU:

  - bf16 against fp32: the same steps from the same initial weights, their losses side by side;
  - micro-batches under NCCL DDP: one step's gradients with micro-batching (DDP no_sync on all
    but the last backward) against the same step in one forward, fp32, world size 1.

    python experiments/benchmarks/gpu_step.py --tokenizer DIR --out gpu.json [--geometry bert-base]
    python experiments/benchmarks/gpu_step.py --tokenizer DIR --out mfu.json --suite mfu

DIR holds a BERT tokenizer (vocab.txt ...): `bioner bench random-encoder` writes one, any BERT
model folder has one. Needs platform/ on PYTHONPATH (or bioner installed) and pydantic.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import torch

from bioner.bench.geometry import GEOMETRIES
from bioner.bench.packing import flex_mask
from bioner.config import TrainConfig
from bioner.data.batching import LengthGroupedBatches
from bioner.data.features import FeatureBuilder
from bioner.data.job import load_job_data
from bioner.data.packing import first_fit, packed_ner_batch, segment_mask
from bioner.model.network import BioNERModel
from bioner.train.step import Step
from bioner.train.worker import _optimizer, seed_everything

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense, SXM
DEVICE = torch.device("cuda")  # --device cpu: a smoke run of this script on a machine without a GPU


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def peak_tflops() -> float | None:
    if DEVICE.type != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def config(args, **kw) -> TrainConfig:
    base = dict(
        dataset=args.dataset,
        encoder=args.tokenizer,
        batch_size=args.batch_size,
        max_length=args.max_length,
        learning_rate=5e-5,
        seed=0,
        epochs=1,
        use_gpu=True,
    )
    return TrainConfig(**{**base, **kw})


def encoder_config(args, vocab_size: int):
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, max_position_embeddings=512, **GEOMETRIES[args.geometry])


def bioner_setup(args, tok, cfg: TrainConfig, bf16: bool = True, ddp: bool = False):
    """What bioner.train.worker.setup_worker builds, minus Ray: data, model, sampler, optimizer, Step."""
    from transformers import BertModel

    seed_everything(cfg.seed)
    device = DEVICE
    data = load_job_data(cfg)
    fb = FeatureBuilder(tok, data.spec.labels, cfg.max_length, data.queries, data.spec.types)
    enc = fb.encode(data.train.tokens, data.train.tags, mrc=cfg.multitask, annotated=data.train.annotated)
    torch.manual_seed(cfg.seed)
    model = BioNERModel(
        BertModel(encoder_config(args, len(tok)), add_pooling_layer=False), len(data.spec.labels), cfg.dropout
    )
    model = model.to(device)
    if cfg.torch_compile:
        model = torch.compile(model, dynamic=True)
    if ddp:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[0] if device.type == "cuda" else None)
    sampler = LengthGroupedBatches(
        [len(x) for x in enc.ner_ids], cfg.batch_size, cfg.seed, group=50 if cfg.group_by_length else 0
    )
    params, opt, sched = _optimizer(model, cfg, device, 10_000, None)
    step = Step(model, params, opt, sched, cfg, device, enc, tok.pad_token_id)
    step.bf16 = bf16 and step.bf16
    return model, sampler, step, enc


def time_bioner(
    args,
    tok,
    cfg: TrainConfig,
    bf16: bool = True,
    pin: bool = True,
    warmup: int | None = None,
    steps: int | None = None,
) -> dict:
    model, sampler, step, enc = bioner_setup(args, tok, cfg, bf16)
    step.pin = pin and step.pin
    warmup = args.warmup if warmup is None else warmup
    n_params, n_embed = parameters(model)
    times, real, padded, sentences = [], 0, 0, 0
    for i, idx in enumerate(
        epochs(sampler.all_batches, sampler.set_epoch, warmup + (args.steps if steps is None else steps))
    ):
        sync()
        t0 = time.perf_counter()
        step(idx)  # .tolist() inside: the step has finished
        dt = time.perf_counter() - t0
        if i >= warmup:
            r, p = step.positions(idx)
            times.append(dt)
            real, padded, sentences = real + r, padded + p, sentences + len(idx)
    return summary(times, real, padded, sentences, n_params, n_embed)


def parameters(model) -> tuple[int, int]:
    """(all parameters, those of the embedding tables): 6 x N x tokens counts a table as a product."""
    n = sum(p.numel() for p in model.parameters())
    embed = sum(p.numel() for name, p in model.named_parameters() if "embeddings." in name)
    return n, embed


def epochs(batches, set_epoch, n: int) -> list[list[int]]:
    """The first n batches of epochs 0, 1, ...: warm-up sees every sentence width an epoch has (the
    GPU libraries choose kernels once per new shape), timing then measures the steady state."""
    out, epoch = [], 0
    while len(out) < n:
        set_epoch(epoch)
        out += batches()
        epoch += 1
    return out[:n]


def hf_batches(enc, batch_size: int, seed: int):
    """Random batches, reshuffled every epoch (the Trainer's sampler)."""
    epoch = [0]

    def batches():
        idx = list(range(len(enc.ner_ids)))
        random.Random(seed * 1_000_003 + epoch[0]).shuffle(idx)
        return [idx[b : b + batch_size] for b in range(0, len(idx), batch_size)]

    return batches, lambda e: epoch.__setitem__(0, e)


def time_hf(args, tok, cfg: TrainConfig, bf16: bool, warmup: int | None = None, steps: int | None = None) -> dict:
    """BertForTokenClassification, random batches padded to their longest, AdamW: the HF recipe's step."""
    from transformers import BertForTokenClassification

    seed_everything(cfg.seed)
    data = load_job_data(cfg)
    enc = FeatureBuilder(tok, data.spec.labels, cfg.max_length).encode(data.train.tokens, data.train.tags)
    torch.manual_seed(cfg.seed)
    config = encoder_config(args, len(tok))
    config.num_labels = len(data.spec.labels)
    model = BertForTokenClassification(config).to(DEVICE).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, fused=True)
    n_params, n_embed = parameters(model)
    warmup = args.warmup if warmup is None else warmup
    times, real, padded, sentences = [], 0, 0, 0
    for i, idx in enumerate(
        epochs(*hf_batches(enc, cfg.batch_size, cfg.seed), warmup + (args.steps if steps is None else steps))
    ):
        width = max(len(enc.ner_ids[j]) for j in idx)
        ids = torch.full((len(idx), width), tok.pad_token_id)
        labels = torch.full((len(idx), width), -100)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, j in enumerate(idx):
            n = len(enc.ner_ids[j])
            ids[r, :n], labels[r, :n], mask[r, :n] = torch.tensor(enc.ner_ids[j]), torch.tensor(enc.ner_labels[j]), 1
        dt = hf_step(
            model,
            opt,
            lambda ids=ids, mask=mask, labels=labels: {
                "input_ids": ids.to(DEVICE),
                "attention_mask": mask.to(DEVICE),
                "labels": labels.to(DEVICE),
            },
            bf16,
        )
        if i >= warmup:
            times.append(dt)
            real += sum(len(enc.ner_ids[j]) for j in idx)
            padded += len(idx) * width
            sentences += len(idx)
    return summary(times, real, padded, sentences, n_params, n_embed)


def hf_step(model, opt, inputs, bf16: bool) -> float:
    """One optimizer step of the HF recipe (autocast forward, backward, clipping, AdamW) on
    `inputs()`, called inside the timer (moving the batch and building its mask count); its seconds."""
    sync()
    t0 = time.perf_counter()
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=bf16):
        loss = model(**inputs()).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    loss.item()
    return time.perf_counter() - t0


def packed_model(args, tok, n_labels: int, attn: str, compile_: bool = False):
    from transformers import BertForTokenClassification

    config = encoder_config(args, len(tok))
    config.num_labels = n_labels
    config._attn_implementation = attn  # "sdpa" or "flex_attention"
    if attn == "flex_attention":
        config.attention_probs_dropout_prob = 0.0  # transformers' flex path refuses attention dropout in training
    model = BertForTokenClassification(config).to(DEVICE)
    return torch.compile(model) if compile_ else model  # one shape every step: no dynamic shapes needed


def packed_inputs(b: dict, attn: str) -> dict:
    segments = b["segments"].to(DEVICE, non_blocking=True)
    mask = segment_mask(segments) if attn == "sdpa" else flex_mask(segments)
    keys = ("input_ids", "position_ids", "labels")
    return {"attention_mask": mask, **{k: b[k].to(DEVICE, non_blocking=True) for k in keys}}


def time_packed(args, tok, cfg: TrainConfig, attn: str, compile_: bool, warmup: int, steps: int) -> dict:
    """The HF model on packed rows (args.rows x max_length positions a step, bf16 autocast, fused
    AdamW): sentences drawn in random order, first fit into the rows; the rest opens the next step."""
    seed_everything(cfg.seed)
    data = load_job_data(cfg)
    enc = FeatureBuilder(tok, data.spec.labels, cfg.max_length).encode(data.train.tokens, data.train.tags)
    lengths = [len(x) for x in enc.ner_ids]
    torch.manual_seed(cfg.seed)
    model = packed_model(args, tok, len(data.spec.labels), attn, compile_).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, fused=True)
    n_params, n_embed = parameters(model)
    batches, set_epoch = hf_batches(enc, len(lengths), cfg.seed)  # one "batch": the epoch's order
    stream, epoch = [], 0
    times, real, padded, sentences = [], 0, 0, 0
    for i in range(warmup + steps):
        if len(stream) < 4 * args.rows * cfg.max_length // 16:
            set_epoch(epoch)
            stream += batches()[0]
            epoch += 1
        rows, stream = first_fit(stream, lengths, cfg.max_length, rows=args.rows)
        b = packed_ner_batch(enc, rows, cfg.max_length, tok.pad_token_id)
        if DEVICE.type == "cuda":
            b = {k: v.pin_memory() for k, v in b.items()}
        dt = hf_step(model, opt, lambda b=b: packed_inputs(b, attn), bf16=True)
        if i >= warmup:
            times.append(dt)
            real += sum(lengths[s] for row in rows for s in row)
            padded += args.rows * cfg.max_length
            sentences += sum(len(r) for r in rows)
    return summary(times, real, padded, sentences, n_params, n_embed)


def packing_check(args, tok, attn: str) -> dict:
    """fp32, no dropout: each sentence's logits in a packed forward against that sentence alone."""
    cfg = config(args, beta=0.0)
    data = load_job_data(cfg)
    enc = FeatureBuilder(tok, data.spec.labels, cfg.max_length).encode(data.train.tokens[:400], data.train.tags[:400])
    lengths = [len(x) for x in enc.ner_ids]
    torch.manual_seed(cfg.seed)
    model = packed_model(args, tok, len(data.spec.labels), attn).eval()
    rows, _ = first_fit(list(range(len(lengths))), lengths, cfg.max_length, rows=8)
    b = packed_ner_batch(enc, rows, cfg.max_length, tok.pad_token_id)
    inputs = packed_inputs(b, attn)
    inputs.pop("labels")
    worst, scale = 0.0, 0.0
    with torch.no_grad():
        packed = model(**inputs).logits
        for r, row in enumerate(rows):
            at = 0
            for s in row:
                alone = model(input_ids=torch.tensor([enc.ner_ids[s]], device=DEVICE)).logits[0]
                worst = max(worst, (alone - packed[r, at : at + lengths[s]]).abs().max().item())
                scale = max(scale, alone.abs().max().item())
                at += lengths[s]
    return {
        "sentences": sum(len(r) for r in rows),
        "rows": len(rows),
        "max_abs_difference": worst,
        "max_abs_logit": scale,
    }


def summary(times, real, padded, sentences, n_params, n_embed=0) -> dict:
    total = sum(times)
    out = {
        "steps": len(times),
        "step_ms_median": 1000 * statistics.median(times),
        "sentences_per_s": sentences / total,
        "real_tokens_per_s": real / total,
        "padding_share": 1 - real / padded,
        "model_tflops": 6 * n_params * real / total / 1e12,
        "parameters": n_params,
        "embedding_parameters": n_embed,
    }
    peak = peak_tflops()
    if peak:
        out["mfu"] = out["model_tflops"] / peak
        out["mfu_without_embeddings"] = 6 * (n_params - n_embed) * real / total / 1e12 / peak
    if DEVICE.type == "cuda":
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
    return out


def bf16_vs_fp32(args, tok, n: int) -> dict:
    """The same n steps (batches, initial weights) in fp32 and in bf16 autocast: their losses."""
    losses = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        cfg = config(args, beta=1.0)
        _, sampler, step, _ = bioner_setup(args, tok, cfg, bf16)
        losses[name] = [step(idx)[0] for idx in sampler.all_batches()[:n]]
    a, b = losses["fp32"], losses["bf16"]
    rel = [abs(x - y) / max(abs(x), 1e-8) for x, y in zip(a, b, strict=True)]
    k = max(1, n // 10)
    return {
        "steps": n,
        "fp32_first": a[0],
        "bf16_first": b[0],
        "fp32_last10_mean": statistics.fmean(a[-k:]),
        "bf16_last10_mean": statistics.fmean(b[-k:]),
        "max_relative_difference": max(rel),
        "median_relative_difference": statistics.median(rel),
    }


def ddp_micro_batches(args, tok) -> dict:
    """One step's gradients: micro-batches under NCCL DDP (no_sync, then the reducing backward)
    against one forward without DDP; fp32, so only summation order differs."""
    import torch.distributed as dist

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("nccl" if DEVICE.type == "cuda" else "gloo", rank=0, world_size=1)
    grads, parts = {}, {}
    for name, micro, ddp in (("one forward", False, False), ("micro-batches, DDP", True, True)):
        cfg = config(args, beta=1.0, micro_batching=micro, micro_batch_tokens=512 if micro else None, batch_size=64)
        model, sampler, step, _ = bioner_setup(args, tok, cfg, bf16=False, ddp=ddp)
        model.eval()  # no dropout: both runs compute the same function; gradients flow all the same
        idx = max(sampler.all_batches()[:20], key=lambda b: sum(len(step.enc.ner_ids[i]) for i in b))
        parts[name] = len(step.parts(idx))
        step.backward(idx)
        net = getattr(model, "module", model)
        grads[name] = torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None]).double()
    dist.destroy_process_group()
    a, b = grads.values()
    return {
        "forwards": parts,
        "max_abs_difference": (a - b).abs().max().item(),
        "max_abs_gradient": a.abs().max().item(),
        "relative_norm_difference": ((a - b).norm() / a.norm()).item(),
    }


def step_systems(args, tok) -> dict:
    """Batch args.batch_size: bioner's step and its options against the HF recipe, fp32 and bf16."""
    return {
        "HF recipe, fp32": lambda: time_hf(args, tok, config(args, beta=0.0), bf16=False),
        "HF recipe, bf16": lambda: time_hf(args, tok, config(args, beta=0.0), bf16=True),
        "bioner single task (default)": lambda: time_bioner(args, tok, config(args, beta=0.0)),
        "bioner single task, fp32": lambda: time_bioner(args, tok, config(args, beta=0.0), bf16=False),
        "bioner single task, no packing": lambda: time_bioner(args, tok, config(args, beta=0.0, packing=False)),
        "bioner single task, length-grouped": lambda: time_bioner(
            args, tok, config(args, beta=0.0, group_by_length=True)
        ),
        "bioner single task, unpinned copies": lambda: time_bioner(args, tok, config(args, beta=0.0), pin=False),
        "bioner single task, torch.compile": lambda: time_bioner(args, tok, config(args, beta=0.0, torch_compile=True)),
        "bioner multi-task (default)": lambda: time_bioner(args, tok, config(args, beta=1.0)),
        "bioner multi-task, torch.compile": lambda: time_bioner(args, tok, config(args, beta=1.0, torch_compile=True)),
    }


def mfu_systems(args, tok) -> dict:
    """Steps large enough to fill the GPU, bf16: padded, micro-batched and packed, eager and compiled."""
    w, n, big = args.mfu_warmup, args.mfu_steps, args.big_batch
    return {
        "packed rows, SDPA block-diagonal mask": lambda: time_packed(
            args, tok, config(args, beta=0.0), "sdpa", False, w, n
        ),
        "packed rows, flex attention": lambda: time_packed(
            args, tok, config(args, beta=0.0), "flex_attention", False, w, n
        ),
        f"HF recipe, bf16, batch {big}": lambda: time_hf(
            args, tok, config(args, beta=0.0, batch_size=big), bf16=True, warmup=w, steps=n
        ),
        f"bioner single task (default), batch {big}": lambda: time_bioner(
            args, tok, config(args, beta=0.0, batch_size=big), warmup=w, steps=n
        ),
        f"bioner multi-task (default), batch {big}": lambda: time_bioner(
            args, tok, config(args, beta=1.0, batch_size=big), warmup=w, steps=n
        ),
        f"bioner single task, no packing, batch {big}": lambda: time_bioner(
            args, tok, config(args, beta=0.0, batch_size=big, packing=False), warmup=w, steps=n
        ),
        "packed rows, SDPA, torch.compile": lambda: time_packed(args, tok, config(args, beta=0.0), "sdpa", True, w, n),
        f"bioner single task, torch.compile, batch {big}": lambda: time_bioner(
            args, tok, config(args, beta=0.0, batch_size=big, torch_compile=True), warmup=2 * w, steps=n
        ),
        f"bioner single task, torch.compile, one forward, batch {big}": lambda: time_bioner(
            args,
            tok,
            config(args, beta=0.0, batch_size=big, torch_compile=True, micro_batch_tokens=big * args.max_length),
            warmup=2 * w,
            steps=n,
        ),
        "packed rows, flex attention, torch.compile": lambda: time_packed(
            args, tok, config(args, beta=0.0), "flex_attention", True, w, n
        ),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--tokenizer", required=True, help="folder with a BERT tokenizer (the encoder is random, built from --geometry)"
    )
    p.add_argument("--dataset", default="experiments/datasets/ncbi-disease.yaml", help="dataset spec (name or path)")
    p.add_argument("--geometry", default="bert-base", choices=sorted(GEOMETRIES), help="encoder shape")
    p.add_argument(
        "--suite",
        default="steps",
        choices=["steps", "mfu"],
        help="steps: batch --batch-size, bioner against the HF recipe, with the bf16 and DDP checks; "
        "mfu: model FLOP utilisation of large steps, padded, micro-batched and packed",
    )
    p.add_argument("--batch-size", type=int, default=32, help="sentences per optimizer step (suite steps)")
    p.add_argument(
        "--max-length", type=int, default=None, help="longest encoder input (default 256, the paper's; suite mfu: 128)"
    )
    p.add_argument(
        "--warmup", type=int, default=170, help="steps run before timing (170: an NCBI-disease epoch at batch 32)"
    )
    p.add_argument("--steps", type=int, default=170, help="timed steps per system")
    p.add_argument(
        "--big-batch",
        type=int,
        default=1024,
        help="sentences per optimizer step of the padded and micro-batched systems (suite mfu)",
    )
    p.add_argument(
        "--rows",
        type=int,
        default=256,
        help="rows of --max-length positions per step of the packed systems (suite mfu)",
    )
    p.add_argument(
        "--mfu-warmup", type=int, default=10, help="steps run before timing (suite mfu; compiled bioner: twice this)"
    )
    p.add_argument("--mfu-steps", type=int, default=40, help="timed steps per system (suite mfu)")
    p.add_argument("--systems", default="", help="';'-separated names (or prefixes) of the systems to run; default all")
    p.add_argument(
        "--fidelity-steps", type=int, default=150, help="steps of the bf16-vs-fp32 comparison (0: skip; suite steps)"
    )
    p.add_argument(
        "--skip-checks",
        action="store_true",
        help="suite steps: only the timings (no bf16-vs-fp32, no DDP gradient check)",
    )
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a smoke run of the script itself")
    p.add_argument("--out", type=Path, default=Path("gpu_step.json"), help="where the figures go (JSON)")
    args = p.parse_args(argv)
    if args.max_length is None:
        args.max_length = 128 if args.suite == "mfu" else 256
    global DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        print("gpu_step.py: no CUDA device (--device cpu runs the script on a CPU, for a smoke test)", file=sys.stderr)
        return 2
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    res = {
        "device": torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "geometry": args.geometry,
        "suite": args.suite,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "systems": {},
    }
    if args.suite == "mfu":
        import transformers

        res.update(transformers=transformers.__version__, big_batch=args.big_batch, rows=args.rows, packing_check={})
        for attn in ("sdpa", "flex_attention"):
            res["packing_check"][attn] = c = packing_check(args, tok, attn)
            print(f"packed forward against each sentence alone ({attn}, fp32):", json.dumps(c), flush=True)
    systems = mfu_systems(args, tok) if args.suite == "mfu" else step_systems(args, tok)
    wanted = [w.strip() for w in args.systems.split(";") if w.strip()]
    if wanted:
        systems = {k: v for k, v in systems.items() if any(k.startswith(w) for w in wanted)}
    for name, fn in systems.items():
        t0 = time.perf_counter()
        try:
            r = fn()
        except Exception as e:  # noqa: BLE001 - one failing system must not cost the others' figures
            res["systems"][name] = {"error": f"{type(e).__name__}: {e}"[:2000]}
            print(f"{name:48s} FAILED {type(e).__name__}: {str(e)[:300]}", flush=True)
            if DEVICE.type == "cuda":
                torch.cuda.empty_cache()
            continue
        r["wall_s"] = time.perf_counter() - t0
        res["systems"][name] = r
        print(
            f"{name:48s} {r['step_ms_median']:7.1f} ms/step {r['sentences_per_s']:8.0f} sent/s "
            f"{r['real_tokens_per_s']:9.0f} tok/s  pad {r['padding_share']:.0%}  MFU {r.get('mfu', float('nan')):.1%} "
            f"({r.get('mfu_without_embeddings', float('nan')):.1%} w/o embeddings)  {r.get('peak_mem_gib', 0):.1f} "
            f"GiB  {r['wall_s']:.0f} s",
            flush=True,
        )
        args.out.write_text(json.dumps(res, indent=2), encoding="utf-8")  # what is done so far, if stopped
    base = res["systems"].get("HF recipe, fp32", {}).get("sentences_per_s")
    for r in res["systems"].values():
        if base and "sentences_per_s" in r:
            r["speedup_vs_hf_fp32"] = r["sentences_per_s"] / base
    if args.suite == "steps" and not args.skip_checks:
        if args.fidelity_steps:
            res["bf16_vs_fp32"] = bf16_vs_fp32(args, tok, args.fidelity_steps)
            print("bf16 vs fp32:", json.dumps(res["bf16_vs_fp32"]), flush=True)
        res["ddp_micro_batches"] = ddp_micro_batches(args, tok)
        print("NCCL DDP micro-batches:", json.dumps(res["ddp_micro_batches"]), flush=True)
    args.out.write_text(json.dumps(res, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
