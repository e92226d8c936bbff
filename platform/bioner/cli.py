"""The `bioner` command: train, evaluate, predict, datasets."""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import BionerError

app = typer.Typer(
    help="Biomedical NER with the multi-task MRC method: Ray Train for training, MLflow for tracking.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
datasets_app = typer.Typer(help="List dataset specs, or check one.", invoke_without_command=True)
app.add_typer(datasets_app, name="datasets")
runs_app = typer.Typer(help="Look at MLflow runs.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
out = Console()
err = Console(stderr=True)

SET_HELP = "Override a config key: key=value, value parsed as YAML (e.g. --set train_fraction=0.1). Repeatable."


@app.command()
def train(
    config: Path = typer.Argument(..., help="YAML training config (a tune config works too: its base values are trained)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    resume: bool = typer.Option(
        False, "--resume",
        help="Continue the experiment's last `bioner train` job after a kill or crash: same CONFIG and --set values "
        "(refused if any key differs), its MLflow run reopened, training restarted from its last epoch checkpoint. "
        "The job is found through <output_dir>/train/<experiment>/bioner_train.json.",
    ),
):
    """Train one model on Ray Train, score it, and log everything to MLflow."""
    from .config import FOREIGN_KEYS, TrainConfig, load_config
    from .training import run_training

    cfg = load_config(TrainConfig, config, set_, ignore=FOREIGN_KEYS)
    out.print(
        f"[bold]training[/] {cfg.dataset} with {cfg.encoder}: "
        + (f"multi-task ({cfg.query_source} queries, alpha={cfg.alpha}, beta={cfg.beta})" if cfg.multitask else "single task (beta = 0)")
        + f", {cfg.epochs} epoch(s), {cfg.num_workers} worker(s)"
    )
    res = run_training(cfg, progress=not quiet, resume=resume)
    _print_scores(res.metrics)
    _print_sample(res.model_dir, cfg)
    uri = cfg.resolved_tracking_uri()
    out.print(f"\nmodel:        {res.model_dir}\nMLflow run:   {res.run_id}  (model: runs:/{res.run_id}/model)")
    out.print(f"predictions:  {res.predictions}")
    out.print(f"open the UI:  mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000")


def _print_scores(metrics: dict) -> None:
    t = Table(title="scores")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in metrics.items():
        t.add_row(k, f"{v:.4f}")
    out.print(t)


def _print_sample(model_dir: Path, cfg) -> None:
    from .corpora import load_spec, read_split
    from .evaluation import spans
    from .predict import Tagger

    split = read_split(load_spec(cfg.dataset), cfg.eval_split)
    sample = next((t for t, g in zip(split.tokens, split.tags) if spans(g)), split.tokens[0])
    text = " ".join(sample)
    ents = Tagger.load(model_dir).entities([text])[0]
    out.print(f"\nsample: {text}")
    out.print("entities: " + json.dumps(ents))


@app.command()
def tune(
    config: Path = typer.Argument(..., help="YAML tune config: training keys plus num_samples, max_concurrent_trials, max_epochs, grace_period, refit_seeds, search."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
    resume: bool = typer.Option(False, "--resume", help="Continue the experiment's interrupted tuning job (Tune restore + the persisted Optuna study)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Search alpha, beta, learning rate and query source (Optuna TPE + ASHA on devel F1), refit the best on train+devel over seeds, register it as challenger."""
    from .config import load_config
    from .tuning import TuneConfig, run_tune

    cfg = load_config(TuneConfig, config, set_)
    out.print(f"[bold]tuning[/] {cfg.dataset} with {cfg.encoder}: {cfg.num_samples} trials x up to {cfg.max_epochs} epoch(s), refit over {cfg.refit_seeds} seed(s)")
    res = run_tune(cfg, resume=resume, progress=not quiet)
    import statistics

    mean = statistics.fmean(res.test_f1)
    sd = statistics.stdev(res.test_f1) if len(res.test_f1) > 1 else 0.0
    out.print("best configuration: " + ", ".join(f"{k}={v}" for k, v in res.best_params.items()) + f"  (devel F1 {res.best_devel_f1:.4f})")
    t = Table(title="refit of the best configuration on train+devel, scored on test")
    for c in ("seed", "precision", "recall", "F1", "MRC F1"):
        t.add_column(c, justify="right")
    for k, m in enumerate(res.refit_metrics):
        t.add_row(str(cfg.seed + k), f"{m['test_precision']:.4f}", f"{m['test_recall']:.4f}", f"{m['test_f1']:.4f}",
                  f"{m['mrc_test_f1']:.4f}" if "mrc_test_f1" in m else "-")
    out.print(t)
    out.print(f"test F1 {mean:.4f} +/- {sd:.4f} over {len(res.test_f1)} seed(s)")
    uri = cfg.resolved_tracking_uri()
    if res.model_version:
        from .registry import model_name

        ds = _dataset_name(cfg.dataset)
        out.print(f"registered: {model_name(ds)} version {res.model_version} (alias challenger)")
        out.print(f"promote:    MLFLOW_TRACKING_URI={uri} bioner promote --dataset {ds}")
    out.print(f"compare:    bioner runs compare --experiment {cfg.experiment} --tracking-uri {uri}")
    out.print(f"open the UI: mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000")


def _store_uri(tracking_uri: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else the default store of `outputs/`."""
    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('outputs').resolve() / 'mlflow.db'}"


def _dataset_name(dataset: str) -> str:
    from .corpora import load_spec

    return load_spec(dataset).name


@runs_app.command("compare")
def runs_compare(
    experiment: str = typer.Option(..., "--experiment", help="MLflow experiment name."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///outputs/mlflow.db)."),
    limit: int = typer.Option(50, help="Rows to show."),
):
    """Tuning trials as a table sorted by devel F1 (the MLflow UI shows the same runs)."""
    import mlflow

    uri = _store_uri(tracking_uri)
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        raise BionerError(f"--experiment {experiment}: no such experiment in {uri}")
    df = mlflow.search_runs([exp.experiment_id], filter_string="tags.`bioner.kind` = 'trial'", order_by=["metrics.devel_f1 DESC"], max_results=limit)
    if df.empty:
        raise BionerError(f"--experiment {experiment}: no tuning trials found")
    t = Table(title=f"trials of {experiment}, best first")
    cols = ["run", "devel F1", "alpha", "beta", "learning_rate", "query_source", "status", "stop reason"]
    for c in cols:
        t.add_column(c)
    for _, r in df.iterrows():
        f1 = r.get("metrics.devel_f1")
        t.add_row(
            str(r.get("tags.mlflow.runName", r["run_id"])),
            "-" if f1 is None or f1 != f1 else f"{f1:.4f}",
            f"{float(r['params.alpha']):.3f}", f"{float(r['params.beta']):.3f}", f"{float(r['params.learning_rate']):.2e}",
            str(r["params.query_source"]), str(r["status"]), str(r.get("tags.stop_reason") or ""),
        )
    out.print(t)


@app.command()
def promote(
    dataset: str = typer.Option(..., "--dataset", help="Dataset name: the registered model is bioner-<dataset>."),
    threshold: float = typer.Option(0.05, help="Largest p-value of the paired bootstrap that allows promotion."),
    resamples: int = typer.Option(1000, min=1000, help="Bootstrap resamples over test sentences (>= 1000)."),
    seed: int = typer.Option(0, help="Bootstrap seed."),
    force: bool = typer.Option(False, "--force", help="Promote whatever the test says (needs --reason)."),
    reason: Optional[str] = typer.Option(None, "--reason", help="Why --force was used; recorded on the model version."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///outputs/mlflow.db)."),
):
    """Move alias `champion` to `challenger` only if it is better on test with paired-bootstrap p <= threshold."""
    from .registry import model_name, promote as do_promote

    uri = _store_uri(tracking_uri)
    name = _dataset_name(dataset)
    d = do_promote(name, threshold, resamples, seed, force, reason, uri)
    verdict = "[green]promoted[/]" if d.promoted else "[yellow]refused[/]"
    out.print(f"{verdict}: {model_name(name)} version {d.challenger_version} -> champion? {d.promoted}. {d.reason}")
    if not d.promoted:
        raise typer.Exit(1)


@app.command()
def fidelity(
    config: Path = typer.Argument(..., help="YAML training config; trained twice, as bioner single-task and as the HF recipe."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
    out_json: Path = typer.Option(Path("outputs/fidelity.json"), "--out", help="Where to write both scores as JSON."),
):
    """Check single-task bioner (beta = 0) against the plain HF recipe (AutoModelForTokenClassification + Trainer) at equal settings."""
    import time

    from .config import FOREIGN_KEYS, TrainConfig, load_config
    from .hf_recipe import train_and_score
    from .training import run_training

    cfg = load_config(TrainConfig, config, (set_ or []) + ["beta=0"], ignore=FOREIGN_KEYS)
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


@app.command()
def evaluate(
    model: str = typer.Option(..., "--model", help="Model folder, or an MLflow model URI (runs:/ID/model, models:/NAME@ALIAS)."),
    dataset: str = typer.Option(..., "--dataset", help="Dataset name or spec path."),
    split: str = typer.Option("test", "--split", help="Split to score: train, devel or test."),
    predictions: Optional[Path] = typer.Option(None, "--predictions", help="Write token/gold/predicted TSV here."),
    batch_size: int = typer.Option(64, help="Sentences per inference batch."),
):
    """Score a model on a dataset split: entity-level P/R/F1 (strict IOB2), per type, MRC F1."""
    from .corpora import load_spec, read_split
    from .predict import Tagger, resolve_model
    from .training import evaluate_split, write_predictions

    if split not in ("train", "devel", "test"):
        raise BionerError(f"--split {split!r}: expected train, devel or test")
    spec = load_spec(dataset)
    data = read_split(spec, split)
    tagger = Tagger.load(resolve_model(model), batch_size=batch_size)
    if tagger.types != spec.types:
        raise BionerError(f"--dataset {dataset}: types {spec.types} differ from the model's {tagger.types}")
    metrics, pred = evaluate_split(tagger, data, spec.types, with_mrc=True)
    _print_scores(metrics)
    if predictions:
        write_predictions(predictions, data.tokens, data.tags, pred)
        out.print(f"predictions: {predictions}")


@app.command()
def predict(
    text: Optional[List[str]] = typer.Argument(None, help="Texts to tag (each one argument)."),
    model: str = typer.Option(..., "--model", help="Model folder, or an MLflow model URI (runs:/ID/model, models:/NAME@ALIAS)."),
    input_: Optional[Path] = typer.Option(None, "--input", help="File with one text per line ('-' for stdin)."),
    batch_size: int = typer.Option(64, help="Texts per inference batch."),
):
    """Tag raw text: one JSON line per text, {"text", "entities": [{"text", "start", "end", "type"}]}."""
    from .predict import Tagger, check_text, resolve_model

    # Undecodable bytes in an argument arrive as lone surrogates, which cannot be written out.
    texts = [check_text(t, f"TEXT argument {i}") for i, t in enumerate(text or [], 1)]
    if input_ is not None:
        if str(input_) == "-":
            try:
                texts += sys.stdin.buffer.read().decode("utf-8").splitlines()
            except UnicodeDecodeError as e:
                raise BionerError(f"--input -: not UTF-8 (byte {e.start + 1})") from None
        else:
            if not input_.is_file():
                raise BionerError(f"--input {input_}: file not found")
            try:
                texts += input_.read_text(encoding="utf-8").splitlines()
            except UnicodeDecodeError as e:
                raise BionerError(f"--input {input_}: not UTF-8 ({e.reason})") from None
    if not texts:
        raise BionerError("nothing to tag: give TEXT arguments or --input FILE")
    tagger = Tagger.load(resolve_model(model), batch_size=batch_size)
    for t, ents in zip(texts, tagger.entities(texts, progress=len(texts) > 1000)):
        sys.stdout.write(json.dumps({"text": t, "entities": ents}, ensure_ascii=False) + "\n")


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@datasets_app.callback()
def datasets_list(ctx: typer.Context):
    """List the dataset specs found (experiments/datasets, $BIONER_DATASETS) with sentence and entity counts."""
    if ctx.invoked_subcommand is not None:
        return
    from .corpora import list_specs, load_spec, read_split, split_stats

    t = Table(title="datasets")
    for c in ("name", "types", "train sent/ent", "devel sent/ent", "test sent/ent", "spec"):
        t.add_column(c)
    for path in list_specs():
        try:
            spec = load_spec(path)
            cells = []
            for s in ("train", "devel", "test"):
                st = split_stats(read_split(spec, s))
                cells.append(f"{st['sentences']:,} / {st['entities']:,}")
            t.add_row(spec.name, ", ".join(spec.types), *cells, _rel(path))
        except BionerError as e:
            t.add_row(path.stem, "[red]invalid[/]", "", "", "", str(e))
    out.print(t)


@datasets_app.command("check")
def datasets_check(spec: str = typer.Argument(..., help="Dataset name or spec path.")):
    """Validate a spec and every line of its three corpus files; print counts per split and type."""
    from .corpora import load_spec, scan_split

    s = load_spec(spec)
    t = Table(title=f"{s.name} ({s.path})")
    for c in ("split", "sentences", "tokens", "entities", "longest sentence (words)", "per type"):
        t.add_column(c)
    for name in ("train", "devel", "test"):
        st = scan_split(s, name)  # streams: a corpus of any size is checked in constant memory
        per = ", ".join(f"{k}: {v}" for k, v in st["per_type"].items())
        t.add_row(name, f"{st['sentences']:,}", f"{st['tokens']:,}", f"{st['entities']:,}", str(st["max_words"]), per)
    out.print(t)
    out.print(f"[green]ok[/]: {s.name}, types {', '.join(s.types)}")


from .cli_sweep import register as _register_sweep  # noqa: E402  (sweep and report live in their own module)

_register_sweep(app)

from .cli_cluster import register as _register_cluster  # noqa: E402  (submit and jobs: Ray Jobs API)

_register_cluster(app)

from .cli_bench import register as _register_bench  # noqa: E402  (bench train|predict)

_register_bench(app)


def main() -> None:
    """Console entry point: user errors are one line on stderr and exit code 2."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow warns on importing mlflow.pyfunc, and on logging this model (its output is one list
    # of entity dicts per text), that it cannot validate `Any` type hints: nothing a user can act on.
    warnings.filterwarnings("ignore", message=".*Any type hint is inferred as AnyType", category=UserWarning)
    try:
        app()
    except BionerError as e:
        err.print(str(e), markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
