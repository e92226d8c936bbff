"""The per-worker side of Ray Train: build the worker's state, then train epoch by epoch.

`setup_worker` is what every per-worker function starts from (this module's training loop, and
the throughput benchmark's own loop in bioner.bench): the job's data encoded once, the model
restored from the last checkpoint or built, wrapped for DDP, and an optimizer step function.
"""

from __future__ import annotations

import math
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist

from ..config import TrainConfig
from ..data.batching import LengthGroupedBatches
from ..data.features import Encoded, FeatureBuilder
from ..data.job import JobData, load_job_data
from ..infer.evaluate import evaluate_split
from ..infer.tagger import Tagger
from ..model import BioNERModel, CorpusTypes, ModelMeta, build_model, load_model, load_tokenizer, save_model
from ..tracking.metrics import PRECISION, log_epoch_metrics
from .contract import WorkerJob
from .live_metrics import LiveMetrics
from .step import Step, unwrap

if TYPE_CHECKING:
    from ray.experimental.tqdm_ray import tqdm
    from ray.train import Checkpoint
    from torch.optim.lr_scheduler import LRScheduler
    from transformers import PreTrainedTokenizerBase

TRAIN_STATE = "train_state.pt"
MODEL_SUBDIR = "model"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def model_meta(cfg: TrainConfig, data: JobData) -> ModelMeta:
    """What inference needs besides the weights (written as bioner.json)."""
    return ModelMeta(
        labels=data.spec.labels,
        types=data.spec.types,
        dataset=data.spec.name,
        encoder=cfg.encoder,
        max_length=cfg.max_length,
        dropout=cfg.dropout,
        multitask=cfg.multitask,
        queries=data.queries.to_dict() if data.queries else None,
        # what each corpus annotates: a composite model is scored on each corpus's own types
        corpora=[CorpusTypes(m.name, m.types) for m in data.spec.members],
    )


@dataclass
class Worker:
    """One worker's state: its data encoded once, the (DDP-wrapped) model, the optimizer step."""

    job: WorkerJob
    rank: int
    world: int
    device: torch.device
    data: JobData
    tok: PreTrainedTokenizerBase
    enc: Encoded
    model: torch.nn.Module
    sampler: LengthGroupedBatches
    opt: torch.optim.Optimizer
    sched: LRScheduler
    step: Step
    start_epoch: int

    @property
    def cfg(self) -> TrainConfig:
        return self.job.config

    @property
    def net(self) -> BioNERModel:
        """The BioNERModel inside torch.compile's and DDP's wrappers."""
        return unwrap(self.model)


def setup_worker(job: WorkerJob) -> Worker:
    """Everything a per-worker function needs, in an order that makes a CPU run repeat exactly."""
    import ray.train  # lazy (platform/README.md)
    import ray.train.torch

    cfg = job.config
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(job.threads)
    seed_everything(cfg.seed)
    device = ray.train.torch.get_device()

    data = load_job_data(cfg, job.spec)
    tok = load_tokenizer(cfg.encoder, cfg.trust_remote_code)
    fb = FeatureBuilder(tok, data.spec.labels, cfg.max_length, data.queries, data.spec.types)
    enc = fb.encode(data.train.tokens, data.train.tags, mrc=cfg.multitask, annotated=data.train.annotated)

    model, state = _restore_or_build(ray.train.get_checkpoint(), cfg, data.spec.labels)
    per_worker_bs = max(1, cfg.batch_size // world)
    lengths = [len(window.input_ids) for window in enc.windows]
    sampler = LengthGroupedBatches(
        lengths, per_worker_bs, cfg.seed, rank, world, group=50 if cfg.group_by_length else 0
    )

    model = ray.train.torch.prepare_model(model)
    if cfg.torch_compile:  # lengths vary per batch: dynamic shapes, not one graph per length
        model = torch.compile(model, dynamic=True)
    params, opt, sched = _optimizer(model, cfg, device, len(sampler) * cfg.epochs, state)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    step = Step(model, params, opt, sched, cfg, device, enc, tok.pad_token_id)
    start_epoch = state["epoch"] + 1 if state else 0
    return Worker(job, rank, world, device, data, tok, enc, model, sampler, opt, sched, step, start_epoch)


def _say(line: str) -> None:
    """A line on the worker's stdout, which Ray shows on the driver. Written, not print()ed: in a Ray Train
    worker whose sys.stdout is not the original stream, Train's print both writes and logs it (shown twice)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def train_loop_per_worker(job: WorkerJob) -> None:
    """Runs on every Ray Train worker: train, and after each epoch checkpoint, score and log (rank 0)."""
    worker = setup_worker(job)
    live = LiveMetrics(
        job.mlflow_run_id or "none", worker.data.spec.name, worker.rank, worker.device
    )  # Prometheus/Grafana via Ray
    cfg = worker.cfg
    bar = _progress_bar(worker.rank, len(worker.sampler) * (cfg.epochs - worker.start_epoch)) if job.progress else None
    if worker.rank == 0:
        _say(
            f"training on {worker.device.type} in {worker.step.precision} "
            f"({worker.world} worker(s), {job.threads} thread(s) each)"
        )
    for epoch in range(worker.start_epoch, cfg.epochs):
        worker.sampler.set_epoch(epoch)
        worker.step.set_epoch(epoch)
        worker.model.train()
        sums, count = np.zeros(3), Throughput([window.sentence for window in worker.enc.windows])
        t0 = time.perf_counter()
        for window_ids in worker.sampler:
            sums += worker.step(window_ids)
            count.add(window_ids)
            live.update(sums, count.sentences)
            if bar is not None:
                bar.update(1)
        elapsed = time.perf_counter() - t0
        losses = (sums / max(1, len(worker.sampler))).tolist()
        loss_m, ner_m, mrc_m, sent_m, win_m = _mean_across_workers(
            [*losses, count.sentences, count.windows], worker.device
        )
        metrics = {
            "epoch": epoch + 1,
            "train_loss": loss_m,
            "train_loss_ner": ner_m,
            "train_loss_mrc": mrc_m,
            "sentences_per_s": sent_m * worker.world / elapsed,  # the workers' mean count times their number: their sum
            "windows_per_s": win_m * worker.world / elapsed,
            "lr": worker.sched.get_last_lr()[0],
        }
        _end_epoch(worker, epoch, metrics)
        live.epoch(metrics)
    if bar is not None:
        bar.close()


class Throughput:
    """What one worker trained on in an epoch: encoder windows, and the distinct sentences they
    come from (a sentence longer than max_length is several windows, counted once). Summed over
    workers, a sentence whose windows went to two workers counts on each: no worker sees the others'."""

    def __init__(self, sentence_of_window: list[int]):  # window id -> the index of its sentence
        self.sentence_of_window = sentence_of_window
        self.windows = 0
        self._seen: set[int] = set()

    def add(self, window_ids: list[int]) -> None:
        self.windows += len(window_ids)
        self._seen.update(self.sentence_of_window[k] for k in window_ids)

    @property
    def sentences(self) -> int:
        return len(self._seen)


def _mean_across_workers(values: list[float], device: torch.device) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / dist.get_world_size()).tolist()


def _restore_or_build(
    checkpoint: Checkpoint | None, cfg: TrainConfig, labels: list[str]
) -> tuple[BioNERModel, dict | None]:
    """The model and training state of the last checkpoint (after a restart), else the model to
    extend (`init_from`: its head rows kept, new types' rows added), else a new model."""
    state = None
    if checkpoint:
        with checkpoint.as_directory() as d:
            model, _, _ = load_model(Path(d) / MODEL_SUBDIR)
            state = torch.load(Path(d) / TRAIN_STATE, map_location="cpu", weights_only=True)
    elif cfg.init_from:
        model, _, meta = load_model(cfg.init_from)
        model.extend_labels(meta.labels, labels)
        model.dropout.p = cfg.dropout
    else:
        model = build_model(cfg.encoder, len(labels), cfg.dropout, cfg.trust_remote_code)
    model.freeze_unused_heads(cfg.alpha, cfg.beta)
    return model, state


def _optimizer(
    model: torch.nn.Module, cfg: TrainConfig, device: torch.device, total_steps: int, state: dict | None
) -> tuple[list[torch.nn.Parameter], torch.optim.Optimizer, LRScheduler]:
    """AdamW (no decay on biases and norms) with linear warm-up and decay, restored from `state`."""
    from transformers import get_linear_schedule_with_warmup  # lazy (platform/README.md)

    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    # One fused kernel over all parameters, on GPU and CPU alike (the HF Trainer's default): on a CPU
    # too it is several times the default multi-tensor (foreach) update (experiments/benchmarks/README.md).
    opt = torch.optim.AdamW(groups, lr=cfg.learning_rate, fused=device.type in ("cuda", "cpu"))
    sched = get_linear_schedule_with_warmup(opt, math.ceil(cfg.warmup_ratio * total_steps), total_steps)
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
    return params, opt, sched


def _end_epoch(worker: Worker, epoch: int, metrics: dict[str, float]) -> None:
    """Rank 0 scores (when asked), checkpoints and logs; every rank reports (a barrier)."""
    import ray.train  # lazy (platform/README.md)

    cfg, job = worker.cfg, worker.job
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if worker.rank == 0:
            model = worker.net
            meta = model_meta(cfg, worker.data)
            if cfg.eval_every_epoch:
                tagger = Tagger(model, worker.tok, meta, worker.device, cfg.eval_batch_size)
                scores, _ = evaluate_split(
                    tagger, worker.data.eval, worker.data.spec.types, with_mrc=False, progress=False
                )
                metrics[f"{cfg.eval_split}_f1"] = scores[f"{cfg.eval_split}_f1"]
                model.train()
            save_model(model, worker.tok, Path(tmp) / MODEL_SUBDIR, meta)
            torch.save(
                {
                    "epoch": epoch,
                    "optimizer": worker.opt.state_dict(),
                    "scheduler": worker.sched.state_dict(),
                    "rng": torch.get_rng_state(),
                },
                Path(tmp) / TRAIN_STATE,
            )
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
            if job.mlflow_run_id:
                log_epoch_metrics(
                    job.tracking_uri, job.mlflow_run_id, metrics, epoch + 1, {PRECISION: worker.step.precision}
                )
            shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k != "epoch")
            _say(f"epoch {epoch + 1}/{cfg.epochs}: {shown}")
        ray.train.report(metrics, checkpoint=checkpoint)


def _progress_bar(rank: int, total: int) -> tqdm | None:
    if rank != 0 or total <= 0:
        return None
    try:  # renders on the driver's terminal, not as interleaved worker log lines
        from ray.experimental.tqdm_ray import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="training steps")
