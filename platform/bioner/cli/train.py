"""`bioner train` and `bioner fidelity`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from ..bench.hf import train_and_score
from ..config import TrainConfig
from ..data.iob import read_split
from ..data.specs import load_spec
from ..data.tags import spans
from ..infer.tagger import Tagger
from ..studies.training import run_training
from .common import SET_HELP, load_command_config, out, print_scores


def train(
    config: Path = typer.Argument(..., help="YAML training config (a tune, sweep or bench config works too: its training keys are used)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    resume: bool = typer.Option(
        False, "--resume",
        help="Continue the experiment's newest unfinished `bioner train` job with this config after a kill or crash: same "
        "CONFIG and --set values (refused if any key differs), its MLflow run reopened, training restarted from its last "
        "good epoch checkpoint. Jobs are found through <output_dir>/train/<experiment>/jobs/<run_id>.json.",
    ),
):
    """Train one model on Ray Train, score it, and log everything to MLflow."""
    cfg = load_command_config(TrainConfig, config, set_)
    out.print(
        f"[bold]training[/] {cfg.dataset} with {cfg.encoder}: "
        + (f"multi-task ({cfg.query_source} queries, alpha={cfg.alpha}, beta={cfg.beta})" if cfg.multitask else "single task (beta = 0)")
        + f", {cfg.epochs} epoch(s), {cfg.num_workers} worker(s)"
    )
    res = run_training(cfg, progress=not quiet, resume=resume)
    print_scores(res.metrics)
    _print_sample(res.model_dir, cfg)
    uri = cfg.resolved_tracking_uri()
    out.print(f"\nmodel:        {res.model_dir}\nMLflow run:   {res.run_id}  (model: runs:/{res.run_id}/model)")
    out.print(f"predictions:  {res.predictions}")
    out.print(f"open the UI:  mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000")


def _print_sample(model_dir: Path, cfg: TrainConfig) -> None:
    split = read_split(load_spec(cfg.dataset), cfg.eval_split)
    sample = next((t for t, g in zip(split.tokens, split.tags) if spans(g)), split.tokens[0])
    text = " ".join(sample)
    ents = Tagger.load(model_dir).entities([text])[0]
    out.print(f"\nsample: {text}")
    out.print("entities: " + json.dumps(ents))


def fidelity(
    config: Path = typer.Argument(..., help="YAML training config; trained twice, as bioner single-task and as the HF recipe."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
    out_json: Path = typer.Option(Path("outputs/fidelity.json"), "--out", help="Where to write both scores as JSON."),
):
    """Check single-task bioner (beta = 0) against the plain HF recipe (AutoModelForTokenClassification + Trainer) at equal settings."""
    cfg = load_command_config(TrainConfig, config, (set_ or []) + ["beta=0"])
    t0 = time.perf_counter()
    ours = run_training(cfg)
    ours_s = time.perf_counter() - t0
    theirs = train_and_score(cfg, Path(cfg.output_dir) / "hf-recipe")
    split = cfg.eval_split
    t = Table(title=f"{cfg.dataset}, {cfg.encoder}, beta=0, {cfg.epochs} epochs, lr {cfg.learning_rate}, seed {cfg.seed}")
    for c in ("", "precision", "recall", "F1", "wall seconds"):
        t.add_column(c)
    t.add_row("bioner (Ray Train)", *(f"{ours.metrics[f'{split}_{k}']:.4f}" for k in ("precision", "recall", "f1")), f"{ours_s:.0f}")
    t.add_row("HF Trainer recipe", *(f"{theirs[f'{split}_{k}']:.4f}" for k in ("precision", "recall", "f1")), f"{theirs['train_seconds']:.0f} (training only)")
    out.print(t)
    diff = 100 * (ours.metrics[f"{split}_f1"] - theirs[f"{split}_f1"])
    out.print(f"F1 difference (bioner - HF): {diff:+.2f} points")
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps({"config": cfg.model_dump(), "bioner": ours.metrics, "bioner_wall_s": ours_s, "hf": theirs}, indent=2))


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command()(fidelity)
