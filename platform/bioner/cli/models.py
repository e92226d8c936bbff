"""`bioner evaluate`, `predict`, `promote` and `runs compare`: using and judging trained models."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from ..config import SPLITS
from ..data.iob import read_split
from ..data.specs import load_spec
from ..errors import BionerError
from ..infer.evaluate import evaluate_split, write_predictions
from ..infer.tagger import Tagger
from ..infer.text import check_text
from ..studies.runs import KIND, RUN_NAME, STOP_REASON, Kind
from ..tracking.models import resolve_model
from ..tracking.registry import model_name
from ..tracking.registry import promote as do_promote
from .common import MODEL_HELP, PRECISION_HELP, TRACKING_HELP, dataset_name, out, print_scores, store_uri

runs_app = typer.Typer(help="Look at MLflow runs.", no_args_is_help=True)


def evaluate(
    model: str = typer.Option(..., "--model", help=MODEL_HELP),
    dataset: str = typer.Option(..., "--dataset", help="Dataset name or spec path."),
    split: str = typer.Option("test", "--split", help="Split to score: train, devel or test."),
    predictions: Optional[Path] = typer.Option(None, "--predictions", help="Write token/gold/predicted TSV here."),
    batch_size: int = typer.Option(64, help="Sentences per inference batch."),
    precision: str = typer.Option("fp32", "--precision", help=PRECISION_HELP + " Default fp32: the model as trained and logged."),
):
    """Score a model on a dataset split: entity-level P/R/F1 (strict IOB2), per type (and per corpus for a composite), MRC F1 (fp32).

    Any dataset works, also one the model was not trained on (cross-corpus): each corpus is scored on the
    types it annotates; predictions of other types are ignored there."""
    if split not in SPLITS:
        raise BionerError(f"--split {split!r}: expected train, devel or test")
    spec = load_spec(dataset)
    data = read_split(spec, split)
    tagger = Tagger.load(resolve_model(model), batch_size=batch_size, precision=precision)
    unknown = [t for t in spec.types if t not in tagger.types]
    if not set(spec.types) & set(tagger.types):
        raise BionerError(f"--dataset {dataset}: none of its types ({', '.join(spec.types)}) is known to the model ({', '.join(tagger.types)})")
    metrics, pred = evaluate_split(tagger, data, spec.types, with_mrc=True)
    print_scores(metrics)
    if unknown:  # a cross-corpus evaluation: the model cannot find what it was never taught
        out.print(f"types of {spec.name} the model does not know (scored, never predicted): {', '.join(unknown)}")
    if predictions:
        write_predictions(predictions, data, pred)
        out.print(f"predictions: {predictions}")


def predict(
    text: Optional[List[str]] = typer.Argument(None, help="Texts to tag (each one argument)."),
    model: str = typer.Option(..., "--model", help=MODEL_HELP),
    input_: Optional[Path] = typer.Option(None, "--input", help="File with one text per line ('-' for stdin)."),
    batch_size: int = typer.Option(64, help="Texts per inference batch."),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
    types: Optional[str] = typer.Option(None, "--types", help="Comma-separated entity types to return (default: every type the model knows)."),
):
    """Tag raw text: one JSON line per text, {"text", "entities": [{"text", "start", "end", "type"}]}."""
    # Undecodable bytes in an argument arrive as lone surrogates, which cannot be written out.
    texts = [check_text(t, f"TEXT argument {i}") for i, t in enumerate(text or [], 1)]
    if input_ is not None:
        texts += _read_lines(input_)
    if not texts:
        raise BionerError("nothing to tag: give TEXT arguments or --input FILE")
    tagger = Tagger.load(resolve_model(model), batch_size=batch_size, precision=precision)
    wanted = [t.strip() for t in types.split(",") if t.strip()] if types is not None else None
    tagger.check_types(wanted)
    for t, ents in zip(texts, tagger.entities(texts, progress=len(texts) > 1000, types=wanted)):
        sys.stdout.write(json.dumps({"text": t, "entities": ents}, ensure_ascii=False) + "\n")


def _read_lines(input_: Path) -> list[str]:
    if str(input_) == "-":
        try:
            return sys.stdin.buffer.read().decode("utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise BionerError(f"--input -: not UTF-8 (byte {e.start + 1})") from None
    if not input_.is_file():
        raise BionerError(f"--input {input_}: file not found")
    try:
        return input_.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise BionerError(f"--input {input_}: not UTF-8 ({e.reason})") from None


def promote(
    dataset: str = typer.Option(..., "--dataset", help="Dataset name: the registered model is bioner-<dataset>."),
    threshold: float = typer.Option(0.05, help="Largest p-value of the paired bootstrap that allows promotion."),
    resamples: int = typer.Option(1000, min=1000, help="Bootstrap resamples over test sentences (>= 1000)."),
    seed: int = typer.Option(0, help="Bootstrap seed."),
    force: bool = typer.Option(False, "--force", help="Promote whatever the test says (needs --reason)."),
    reason: Optional[str] = typer.Option(None, "--reason", help="Why --force was used; recorded on the model version."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
):
    """Move alias `champion` to `challenger` only if it is better on test with paired-bootstrap p <= threshold."""
    uri = store_uri(tracking_uri)
    name = dataset_name(dataset)
    d = do_promote(name, threshold, resamples, seed, force, reason, uri)
    verdict = "[green]promoted[/]" if d.promoted else "[yellow]refused[/]"
    out.print(f"{verdict}: {model_name(name)} version {d.challenger_version} -> champion? {d.promoted}. {d.reason}")
    if not d.promoted:
        raise typer.Exit(1)


@runs_app.command("compare")
def runs_compare(
    experiment: str = typer.Option(..., "--experiment", help="MLflow experiment name."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
    limit: int = typer.Option(50, help="Rows to show."),
):
    """Tuning trials as a table sorted by devel F1 (the MLflow UI shows the same runs)."""
    import mlflow  # lazy: mlflow takes 2 s to import, `bioner --help` none

    uri = store_uri(tracking_uri)
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        raise BionerError(f"--experiment {experiment}: no such experiment in {uri}")
    df = mlflow.search_runs([exp.experiment_id], filter_string=f"tags.`{KIND}` = '{Kind.TRIAL}'", order_by=["metrics.devel_f1 DESC"],
                            max_results=limit)
    if df.empty:
        raise BionerError(f"--experiment {experiment}: no tuning trials found")
    t = Table(title=f"trials of {experiment}, best first")
    for c in ("run", "devel F1", "alpha", "beta", "learning_rate", "query_source", "status", "stop reason"):
        t.add_column(c)
    for _, r in df.iterrows():
        f1 = r.get("metrics.devel_f1")
        t.add_row(
            str(r.get(f"tags.{RUN_NAME}", r["run_id"])),
            "-" if f1 is None or f1 != f1 else f"{f1:.4f}",
            f"{float(r['params.alpha']):.3f}", f"{float(r['params.beta']):.3f}", f"{float(r['params.learning_rate']):.2e}",
            str(r["params.query_source"]), str(r["status"]), str(r.get(f"tags.{STOP_REASON}") or ""),
        )
    out.print(t)


def register(app: typer.Typer) -> None:
    app.command()(evaluate)
    app.command()(predict)
    app.command()(promote)
    app.add_typer(runs_app, name="runs")
