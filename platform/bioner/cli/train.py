"""`bioner train` and `bioner fidelity`."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import typer
from rich.table import Table

from ..bench.hf import train_and_score
from ..config import TrainConfig
from ..data.iob import read_split
from ..data.specs import load_spec
from ..data.tags import spans
from ..infer.tagger import Tagger
from ..studies.extend import run_extend
from ..studies.training import run_training
from ..tracking.registry import model_name
from .common import MODEL_HELP, SET_HELP, load_command_config, out, print_scores


def train(
    config: Path = typer.Argument(
        ..., help="YAML training config (a tune, sweep or bench config works too: its training keys are used)."
    ),
    set_: list[str] | None = typer.Option(None, "--set", help=SET_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue the experiment's newest unfinished `bioner train` job with this config after a kill or crash: "
        "same CONFIG and --set values (refused if any key differs), its MLflow run reopened, training restarted from "
        "its last good epoch checkpoint. Jobs are found through <output_dir>/train/<experiment>/jobs/<run_id>.json.",
    ),
):
    """Train one model on Ray Train, score it, and log everything to MLflow."""
    cfg = load_command_config(TrainConfig, config, set_)
    out.print(
        f"[bold]training[/] {cfg.dataset} with {cfg.encoder}: "
        + (
            f"multi-task ({cfg.query_source} queries, alpha={cfg.alpha}, beta={cfg.beta})"
            if cfg.multitask
            else "single task (beta = 0)"
        )
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
    sample = next((t for t, g in zip(split.tokens, split.tags, strict=True) if spans(g)), split.tokens[0])
    text = " ".join(sample)
    ents = Tagger.load(model_dir).entities([text])[0]
    out.print(f"\nsample: {text}")
    out.print("entities: " + json.dumps(ents))


def fidelity(
    config: Path = typer.Argument(
        ..., help="YAML training config; trained twice per seed, as bioner single-task and as the HF recipe."
    ),
    set_: list[str] | None = typer.Option(None, "--set", help=SET_HELP),
    seeds: int = typer.Option(
        1, "--seeds", min=1, help="Seeds seed, seed+1, ...: both systems train once per seed; mean +/- sd printed."
    ),
    out_json: Path = typer.Option(Path("outputs/fidelity.json"), "--out", help="Where to write every score as JSON."),
):
    """Check single-task bioner (beta = 0, its default training) against the plain HF recipe (AutoModelForTokenClassification + Trainer) at equal settings."""  # noqa: E501 - typer prints this docstring's line breaks as they are in `bioner --help`
    base = load_command_config(TrainConfig, config, (set_ or []) + ["beta=0"])
    rows = []
    for k in range(seeds):
        cfg = base.train_config(seed=base.seed + k)
        t0 = time.perf_counter()
        ours = run_training(cfg)
        ours_s = time.perf_counter() - t0
        theirs = train_and_score(cfg, Path(cfg.output_dir) / "hf-recipe")
        rows.append({"seed": cfg.seed, "bioner": ours.metrics, "bioner_wall_s": ours_s, "hf": theirs})
    out.print(_fidelity_table(base, rows))
    split = base.eval_split
    for name in ("bioner", "hf"):
        f1 = [100 * r[name][f"{split}_f1"] for r in rows]
        sd = statistics.stdev(f1) if len(f1) > 1 else 0.0
        out.print(
            f"{'bioner' if name == 'bioner' else 'HF recipe'}: F1 {statistics.fmean(f1):.2f} +/- {sd:.2f} over "
            f"{len(f1)} seed(s)"
        )
    diff = statistics.fmean(100 * (r["bioner"][f"{split}_f1"] - r["hf"][f"{split}_f1"]) for r in rows)
    out.print(f"F1 difference (bioner - HF), mean over seeds: {diff:+.2f} points")
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(
        json.dumps({"config": base.model_dump(), "runs": rows, "mean_f1_difference_points": diff}, indent=2)
    )


def _fidelity_table(cfg: TrainConfig, rows: list[dict]) -> Table:
    split = cfg.eval_split
    t = Table(title=f"{cfg.dataset}, {cfg.encoder}, beta=0, {cfg.epochs} epochs, lr {cfg.learning_rate}")
    for c in ("seed", "system", "precision", "recall", "F1", "wall seconds"):
        t.add_column(c)
    for r in rows:
        t.add_row(
            str(r["seed"]),
            "bioner (Ray Train)",
            *(f"{r['bioner'][f'{split}_{k}']:.4f}" for k in ("precision", "recall", "f1")),
            f"{r['bioner_wall_s']:.0f}",
        )
        t.add_row(
            "",
            "HF Trainer recipe",
            *(f"{r['hf'][f'{split}_{k}']:.4f}" for k in ("precision", "recall", "f1")),
            f"{r['hf']['train_seconds']:.0f} (training only)",
        )
    return t


def extend(
    model: str = typer.Option(..., "--model", help=MODEL_HELP),
    add: str = typer.Option(..., "--add", help="Dataset spec (name or path) whose new entity types the model learns."),
    set_: list[str] | None = typer.Option(
        None,
        "--set",
        help=SET_HELP + " The model's own settings (tokenizer, max_length, query source) are the defaults.",
    ),
    name: str | None = typer.Option(
        None,
        "--name",
        help="Name of the extended dataset and model (default: <model's dataset>+<added spec>): registered as "
        "bioner-<name>.",
    ),
    base: str | None = typer.Option(
        None,
        "--base",
        help="Spec of the corpora the model was trained on, when it is not found by the name the model records.",
    ),
    register: bool = typer.Option(
        True, "--register/--no-register", help="Register the result as bioner-<name>, alias challenger."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Teach a trained or registered model the entity types of another spec without forgetting its own: its head rows
    are kept, new rows added, and it trains on its old corpora together with the new one (each asked and scored only
    about the types it annotates). The run is tagged with the parent model's URI."""
    res = run_extend(model, add, set_, name, base, register, progress=not quiet)
    print_scores(res.result.metrics)
    out.print(f"extended {model} with {', '.join(res.added)}: types {', '.join(res.types)}")
    out.print(f"dataset:      {res.spec_path}\nmodel:        {res.result.model_dir}\nMLflow run:   {res.result.run_id}")
    if res.version:
        out.print(
            f"registered:   {model_name(res.name)} version {res.version} (alias challenger); "
            f"promote with: bioner promote --dataset {res.spec_path}"
        )


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command()(fidelity)
    app.command()(extend)
