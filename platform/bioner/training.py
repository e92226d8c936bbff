"""Joint multi-task training on Ray Train: the per-worker loop and the driver that launches it."""

from __future__ import annotations

import math
import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import TrainConfig
from .data import load_job_data
from .features import FeatureBuilder, LengthGroupedBatches, mrc_batch, mrc_rows, ner_batch

TRAIN_STATE = "train_state.pt"
MODEL_SUBDIR = "model"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def model_meta(cfg: TrainConfig, data) -> dict:
    """What inference needs besides the weights (written as bioner.json)."""
    return {
        "labels": data.spec.labels,
        "types": data.spec.types,
        "dataset": data.spec.name,
        "encoder": cfg.encoder,
        "max_length": cfg.max_length,
        "dropout": cfg.dropout,
        "multitask": cfg.multitask,
        "queries": data.queries.to_dict() if data.queries else None,
    }


def _mean_across_workers(values: list[float], device) -> list[float]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / dist.get_world_size()).tolist()


def train_loop_per_worker(loop_config: dict) -> None:
    """Runs on every Ray Train worker. Reads only its argument, never global configuration."""
    import ray.train
    import ray.train.torch

    from .model import load_tokenizer

    cfg = TrainConfig(**loop_config["train"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(loop_config["threads"])
    seed_everything(cfg.seed)
    device = ray.train.torch.get_device()

    data = load_job_data(cfg)
    tok = load_tokenizer(cfg.encoder, cfg.trust_remote_code)
    fb = FeatureBuilder(tok, data.spec.labels, cfg.max_length, data.queries, data.spec.types)
    enc = fb.encode(data.train.tokens, data.train.tags, mrc=cfg.multitask)

    model, state = _restore_or_build(ray.train.get_checkpoint(), cfg, len(data.spec.labels))
    start_epoch = state["epoch"] + 1 if state else 0

    per_worker_bs = max(1, cfg.batch_size // world)
    lengths = [len(x) for x in enc.ner_ids]
    sampler = LengthGroupedBatches(lengths, per_worker_bs, cfg.seed, rank, world, group=50 if cfg.group_by_length else 0)
    steps_per_epoch = len(sampler)

    model = ray.train.torch.prepare_model(model)
    if cfg.torch_compile:  # lengths vary per batch: dynamic shapes, not one graph per length
        model = torch.compile(model, dynamic=True)
    params, opt, sched = _optimizer(model, cfg, device, steps_per_epoch * cfg.epochs, state)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    step = _step_fn(model, params, opt, sched, cfg, device, enc, tok.pad_token_id)
    from .live_metrics import LiveMetrics

    live = LiveMetrics.for_worker(loop_config, data.spec.name, rank, device)  # Prometheus/Grafana, via Ray

    if loop_config.get("bench"):  # `bioner bench train`: time steps, no scoring, checkpoints or logging
        return _bench_steps(step, sampler, enc, cfg, device, loop_config["bench"], model)
    bar = _progress_bar(rank, steps_per_epoch * (cfg.epochs - start_epoch)) if loop_config.get("progress", True) else None
    for epoch in range(start_epoch, cfg.epochs):
        sampler.set_epoch(epoch)
        model.train()
        sums, n_sent = np.zeros(3), 0
        t0 = time.perf_counter()
        for idx in sampler:
            sums += step(idx)
            n_sent += len(idx)
            live.update(sums, n_sent)
            if bar is not None:
                bar.update(1)
        elapsed = time.perf_counter() - t0
        loss_m, ner_m, mrc_m = _mean_across_workers((sums / max(1, steps_per_epoch)).tolist(), device)
        metrics = {
            "epoch": epoch + 1,
            "train_loss": loss_m,
            "train_loss_ner": ner_m,
            "train_loss_mrc": mrc_m,
            "sentences_per_s": n_sent * world / elapsed,
            "lr": sched.get_last_lr()[0],
        }
        _end_epoch(rank, _unwrap(model), tok, cfg, data, device, opt, sched, epoch, metrics, loop_config)
        live.epoch(metrics)
    if bar is not None:
        bar.close()


def _unwrap(model):
    """The BioNERModel inside torch.compile's and DDP's wrappers."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def _bench_steps(step, sampler, enc, cfg: TrainConfig, device, bench: dict, model) -> None:
    from .bench import StepRecorder

    rec = StepRecorder(enc, cfg.alpha > 0, cfg.multitask, bench)
    model.train()
    for epoch in range(math.ceil(rec.total / max(1, len(sampler)))):
        sampler.set_epoch(epoch)
        for idx in sampler:
            t0 = time.perf_counter()
            step(idx)  # returns the losses with .item(): the step has finished, on GPU too
            if rec.add(idx, time.perf_counter() - t0):
                return rec.write(bench["out"], device)
    rec.write(bench["out"], device)


def _restore_or_build(checkpoint, cfg: TrainConfig, num_labels: int):
    """The model and training state of the last checkpoint (after a restart), else a new model."""
    from .model import build_model, load_model

    if checkpoint:
        with checkpoint.as_directory() as d:
            model, _, _ = load_model(Path(d) / MODEL_SUBDIR)
            state = torch.load(Path(d) / TRAIN_STATE, map_location="cpu", weights_only=True)
    else:
        model, state = build_model(cfg.encoder, num_labels, cfg.dropout, cfg.trust_remote_code), None
    model.freeze_unused_heads(cfg.alpha, cfg.beta)
    return model, state


def _optimizer(model, cfg: TrainConfig, device, total_steps: int, state: dict | None):
    """AdamW (no decay on biases and norms) with linear warm-up and decay, restored from `state`."""
    from transformers import get_linear_schedule_with_warmup

    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    # One fused kernel over all parameters, on GPU and CPU alike (the HF Trainer's default since
    # torch 2.8): on 2 CPU cores a MiniLM step's AdamW update takes about 25 ms fused, 130 ms with
    # the default multi-tensor (foreach) implementation.
    opt = torch.optim.AdamW(groups, lr=cfg.learning_rate, fused=device.type in ("cuda", "cpu"))
    sched = get_linear_schedule_with_warmup(opt, math.ceil(cfg.warmup_ratio * total_steps), total_steps)
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
    return params, opt, sched


def _step_fn(model, params, opt, sched, cfg: TrainConfig, device, enc, pad_id: int):
    """One optimizer step on the NER and MRC batches of the sentences `idx`: returns the 3 losses."""
    multiple = 8 if device.type == "cuda" else 1  # tensor-core friendly shapes on GPU
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()

    pin = device.type == "cuda"  # pinned host memory makes the copy asynchronous

    def to_dev(b):
        return {k: (v.pin_memory() if pin else v).to(device, non_blocking=True) for k, v in b.items()}

    def step(idx) -> list[float]:
        ner = to_dev(ner_batch(enc, idx, pad_id, multiple)) if cfg.alpha > 0 else None
        mrc = to_dev(mrc_batch(enc, mrc_rows(enc, idx), pad_id, multiple)) if cfg.multitask else None
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss, l_ner, l_mrc = model(ner, mrc, cfg.alpha, cfg.beta)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        return [loss.item(), l_ner.item(), l_mrc.item()]

    return step


def _end_epoch(rank, model, tok, cfg: TrainConfig, data, device, opt, sched, epoch: int, metrics: dict, loop_config: dict):
    """Rank 0 scores (when asked), checkpoints and logs; every rank reports (a barrier)."""
    import ray.train

    from .evaluation import score
    from .model import save_model
    from .predict import Tagger
    from .tracking import log_epoch_metrics

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            meta = model_meta(cfg, data)
            if cfg.eval_every_epoch:
                tagger = Tagger(model, tok, meta, device, cfg.eval_batch_size)
                metrics[f"{cfg.eval_split}_f1"] = score(data.eval.tags, tagger.tag(data.eval.tokens), data.spec.types)["f1"]
                model.train()
            save_model(model, tok, Path(tmp) / MODEL_SUBDIR, meta)
            torch.save(
                {"epoch": epoch, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": torch.get_rng_state()},
                Path(tmp) / TRAIN_STATE,
            )
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
            if loop_config.get("mlflow_run_id"):
                log_epoch_metrics(loop_config["tracking_uri"], loop_config["mlflow_run_id"], metrics, epoch + 1)
            print(f"epoch {epoch + 1}/{cfg.epochs}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k != "epoch"))
        ray.train.report(metrics, checkpoint=checkpoint)


def _progress_bar(rank: int, total: int):
    if rank != 0 or total <= 0:
        return None
    try:  # renders on the driver's terminal, not as interleaved worker log lines
        from ray.experimental.tqdm_ray import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="training steps")


# --------------------------------------------------------------------------- driver


@dataclass
class TrainResult:
    run_id: str
    model_dir: Path
    metrics: dict
    predictions: Path
    model_uri: str  # the logged MLflow model (models:/m-...); runs:/<run_id>/model resolves to it too


def default_cpus_per_worker(cfg: TrainConfig, concurrent: int = 1, reserved: float = 0.0) -> float:
    """The cluster's CPUs shared by `concurrent` jobs of num_workers each, less `reserved` per job.

    Fractional: a Tune trial holds 0.01 CPU, so on 2 cores its one worker gets 1.99 (2 threads).
    """
    import ray

    if cfg.cpus_per_worker:
        return cfg.cpus_per_worker
    total = float(ray.cluster_resources().get("CPU", os.cpu_count() or 1))
    per = (total - reserved * concurrent) / (concurrent * cfg.num_workers)
    return max(0.1, math.floor(per * 100) / 100)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_local_ray(**kwargs) -> None:
    """A local Ray on 127.0.0.1 whose processes know their own dashboard.

    Ray Train's placement-group cleaner asks the State API for the controller's state; with no
    address it looks for "the" local Ray and fails when a second instance runs on the machine
    (another user's job, a test cluster). Naming the API server in the environment, which Ray's
    processes inherit from this driver, makes every instance find its own.
    """
    import ray

    port = _free_port()
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    # On Linux Ray announces the machine's network address and its gRPC servers (GCS, raylet,
    # workers, agents) listen on it, although `_node_ip_address="127.0.0.1"` is asked for. Its
    # single-machine mode (the macOS/Windows default) keeps the node address, hence every server,
    # on loopback. The variable is read by the processes Ray starts; this process imported Ray already.
    from ray._private import ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    kwargs.setdefault("logging_level", "WARNING")
    # address="local": a new instance, never one that `ray start` left running on this machine.
    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port, **kwargs)


def ensure_ray() -> None:
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, log_to_driver=True, logging_level="WARNING")
    else:
        start_local_ray(log_to_driver=True)


def fit(
    cfg: TrainConfig, mlflow_run_id: str | None, tracking_uri: str | None, storage: Path, name: str,
    callbacks=None, progress: bool = True, bench: dict | None = None,
):
    """Run the per-worker loop on Ray Train; returns the Ray Train Result."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ensure_ray()
    cpus = default_cpus_per_worker(cfg)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "train": cfg.model_dump(),
            "threads": max(1, round(cpus)),
            "mlflow_run_id": mlflow_run_id,
            "tracking_uri": tracking_uri,
            "progress": progress,
            "bench": bench,
        },
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker={"CPU": cpus, **({"GPU": 1} if cfg.use_gpu else {})}
        ),
        run_config=RunConfig(
            name=name,
            storage_path=str(storage),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            callbacks=callbacks or [],
        ),
    )
    return trainer.fit()


def write_predictions(path: Path, tokens, gold, pred) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("token\tgold\tpredicted\n")
        for toks, g, p in zip(tokens, gold, pred):
            for row in zip(toks, g, p):
                f.write("\t".join(row) + "\n")
            f.write("\n")
    return path


def evaluate_split(tagger, split, types, with_mrc: bool, progress: bool = True) -> tuple[dict, list[list[str]]]:
    """Scores of a tagger on one split, keys prefixed with the split name."""
    from .evaluation import score

    pred = tagger.tag(split.tokens, progress=progress)
    s = score(split.tags, pred, types)
    out = {f"{split.name}_{k}": v for k, v in s.items()}
    if with_mrc and tagger.has_mrc:
        out[f"mrc_{split.name}_f1"] = score(split.tags, tagger.mrc_tags(split.tokens, progress=progress), types)["f1"]
    return out, pred


JOB_STATE = "bioner_train.json"


def job_state_path(out_dir: Path, experiment: str) -> Path:
    """Where `bioner train` records its experiment's newest job, for `--resume`."""
    return out_dir / "train" / experiment / JOB_STATE


def resumable_run(cfg: TrainConfig, out_dir: Path) -> str:
    """The MLflow run id of the experiment's last job, if it can be continued with this config."""
    import json

    from mlflow import MlflowClient

    from . import tracking
    from .errors import BionerError

    path = job_state_path(out_dir, cfg.experiment)
    if not path.is_file():
        raise BionerError(f"--resume: no training job of experiment {cfg.experiment!r} to resume ({path} not found)")
    state = json.loads(path.read_text(encoding="utf-8"))
    now = cfg.model_dump()
    changed = [k for k in now if state["config"].get(k) != now[k]]
    if changed:
        k = changed[0]
        raise BionerError(f"--resume: {k} is {now[k]!r}, the interrupted job had {state['config'].get(k)!r}; resume with the same config")
    uri = cfg.resolved_tracking_uri()
    tracking.check_reachable(uri)
    status = MlflowClient(uri).get_run(state["run_id"]).info.status
    if status == "FINISHED":
        raise BionerError(f"--resume: the last job of experiment {cfg.experiment!r} (run {state['run_id']}) has finished; train without --resume")
    return state["run_id"]


def _record_job(cfg: TrainConfig, out_dir: Path, run_id: str) -> None:
    import json

    path = job_state_path(out_dir, cfg.experiment)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"run_id": run_id, "config": cfg.model_dump()}), encoding="utf-8")
    tmp.replace(path)  # atomic: a kill never leaves half a state file


def run_training(
    cfg: TrainConfig, progress: bool = True, parent_run_id: str | None = None, tags: dict | None = None, resume: bool = False
) -> TrainResult:
    """The whole job: validate, open an MLflow run, train on Ray Train, score, log the model.

    `resume`: reopen the experiment's last job's MLflow run and continue its Ray Train run (same
    name and storage), which restarts from the newest checkpoint of that run.
    """
    from . import tracking
    from .predict import Tagger

    data = load_job_data(cfg)  # corpus and spec errors surface here, before any run exists
    out_dir = tracking.prepare_output_dir(cfg.output_dir)
    uri = cfg.resolved_tracking_uri()
    resume_id = resumable_run(cfg, out_dir) if resume else None
    with tracking.training_run(cfg, data, parent_run_id, tags, resume_run_id=resume_id) as run_id:
        if parent_run_id is None and resume_id is None:
            _record_job(cfg, out_dir, run_id)
        result = fit(cfg, run_id, uri, out_dir / "ray_results", run_id, progress=progress)
        if result.error:
            raise result.error
        model_dir = out_dir / "models" / run_id
        with result.checkpoint.as_directory() as d:
            import shutil

            shutil.copytree(Path(d) / MODEL_SUBDIR, model_dir, dirs_exist_ok=True)
        tagger = Tagger.load(model_dir, batch_size=cfg.eval_batch_size)
        metrics, pred = evaluate_split(tagger, data.eval, data.spec.types, cfg.multitask, progress)
        preds = write_predictions(out_dir / "predictions" / f"{run_id}.{data.eval.name}.tsv", data.eval.tokens, data.eval.tags, pred)
        model_uri = tracking.log_final(metrics, preds, model_dir)
    return TrainResult(run_id, model_dir, metrics, preds, model_uri)
