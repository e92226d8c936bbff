"""`bioner tune`, `bioner sweep` and `bioner report`: studies made of many training runs."""

from __future__ import annotations

import statistics
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from ..config import load_config
from ..studies.report import build_report
from ..studies.sweep import run_sweep
from ..studies.sweep_config import grid, load_sweep
from ..studies.tune import run_tune
from ..studies.tune_config import TuneConfig
from ..tracking.registry import model_name
from .common import SET_HELP, TRACKING_HELP, dataset_name, out, store_uri

SWEEP_SET_HELP = (
    "Override a sweep or training key: key=value, value parsed as YAML (e.g. --set seeds=5, --set profile=gpu). "
    "Repeatable."
)


def tune(
    config: Path = typer.Argument(
        ...,
        help="YAML tune config: training keys plus num_samples, max_concurrent_trials, max_epochs, grace_period, "
        "refit_seeds, search.",
    ),
    set_: list[str] | None = typer.Option(None, "--set", help=SET_HELP),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue the experiment's interrupted tuning job (Tune restore + the persisted Optuna study).",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Search alpha, beta, learning rate and query source (Optuna TPE + ASHA on devel F1), refit the best on train+devel over seeds, register it as challenger."""  # noqa: E501 - typer prints this docstring's line breaks as they are in `bioner --help`
    cfg = load_config(TuneConfig, config, set_)
    out.print(
        f"[bold]tuning[/] {cfg.dataset} with {cfg.encoder}: {cfg.num_samples} trials x up to {cfg.max_epochs} "
        f"epoch(s), refit over {cfg.refit_seeds} seed(s)"
    )
    res = run_tune(cfg, resume=resume, progress=not quiet)
    mean = statistics.fmean(res.test_f1)
    sd = statistics.stdev(res.test_f1) if len(res.test_f1) > 1 else 0.0
    out.print(
        "best configuration: "
        + ", ".join(f"{k}={v}" for k, v in res.best_params.items())
        + f"  (devel F1 {res.best_devel_f1:.4f})"
    )
    t = Table(title="refit of the best configuration on train+devel, scored on test")
    for c in ("seed", "precision", "recall", "F1", "MRC F1"):
        t.add_column(c, justify="right")
    for k, m in enumerate(res.refit_metrics):
        t.add_row(
            str(cfg.seed + k),
            f"{m['test_precision']:.4f}",
            f"{m['test_recall']:.4f}",
            f"{m['test_f1']:.4f}",
            f"{m['mrc_test_f1']:.4f}" if "mrc_test_f1" in m else "-",
        )
    out.print(t)
    out.print(f"test F1 {mean:.4f} +/- {sd:.4f} over {len(res.test_f1)} seed(s)")
    stages = {"search": f"{cfg.num_samples} trials", "refit": f"{cfg.refit_seeds} seed(s)", "register": "challenger"}
    for stage, seconds in res.seconds.items():
        out.print(f"[bold]{stage}[/] ({stages[stage]}): {seconds / 60:.1f} min ({seconds:.0f} s)")
    uri = cfg.resolved_tracking_uri()
    if res.model_version:
        ds = dataset_name(cfg.dataset)
        out.print(f"registered: {model_name(ds)} version {res.model_version} (alias challenger)")
        out.print(f"promote:    MLFLOW_TRACKING_URI={uri} bioner promote --dataset {ds}")
    out.print(f"compare:    bioner runs compare --experiment {cfg.experiment} --tracking-uri {uri}")
    out.print(f"open the UI: mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000")


def sweep(
    config: Path = typer.Argument(
        ...,
        help="YAML sweep config: training keys for every cell plus profile, profiles, seeds, datasets, variants, "
        "train_fractions, per_dataset.",
    ),
    set_: list[str] | None = typer.Option(None, "--set", help=SWEEP_SET_HELP),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the experiment's interrupted sweep without redoing finished cells."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines."),
    report: bool = typer.Option(
        True, "--report/--no-report", help="Write the report (tables, plots, HTML) when the sweep ends."
    ),
    report_dir: Path | None = typer.Option(
        None, "--report-dir", help="Report folder (default: dashboards/reports/<experiment>)."
    ),
):
    """Run a grid of training runs (datasets x variants x seeds, optionally x training fractions) on Ray Tune, one nested MLflow run per cell."""  # noqa: E501 - typer prints this docstring's line breaks as they are in `bioner --help`
    cfg = load_sweep(config, set_)
    cells = grid(cfg, str(config))
    out.print(
        f"[bold]sweep[/] {cfg.experiment} ({cfg.profile} profile, {cfg.encoder}): {len(cells)} cells = "
        f"{len(cfg.dataset_list())} dataset(s) x {len(cfg.variants)} variant(s) x {cfg.seeds} seed(s)"
        + (f" x {len(cfg.fraction_list())} training fractions" if cfg.train_fractions else "")
        + f", {cfg.epochs} epoch(s) each"
    )
    res = run_sweep(cfg, resume=resume, progress=not quiet)
    out.print(f"{res.finished} of {res.cells} cells finished; parent MLflow run {res.parent_run_id}")
    if report:
        _report(cfg.experiment, res.tracking_uri, report_dir, res.parent_run_id)
    else:
        out.print(f"report: bioner report --experiment {cfg.experiment} --tracking-uri {res.tracking_uri}")


def report(
    experiment: str = typer.Option(..., "--experiment", help="MLflow experiment of the sweep (or tuning job)."),
    out_dir: Path | None = typer.Option(
        None, "--out", help="Report folder (default: dashboards/reports/<experiment>)."
    ),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
    run: list[str] | None = typer.Option(
        None,
        "--run",
        help="Parent run id (default: the experiment's newest sweep or tuning job). Repeat it to pool sweeps of one "
        "grid run with other seeds (`--set seed=43 --set seeds=2`): every seed in the tables and the bootstrap; the "
        "first run heads the report.",
    ),
    log: bool = typer.Option(
        True, "--log/--no-log", help="Also log the report's files to the parent MLflow run (artifact folder report/)."
    ),
):
    """Tables (P/R/F1 mean ± sd, the paper's F1, bootstrap p vs the baseline), plots and one self-contained HTML page."""  # noqa: E501 - typer prints this docstring's line breaks as they are in `bioner --help`
    _report(experiment, store_uri(tracking_uri), out_dir, run, log)


def _report(experiment: str, uri: str, out_dir: Path | None, run: str | list[str] | None, log: bool = True) -> None:
    with out.status("building the report (bootstrap tests, plots)"):
        rep = build_report(experiment, uri, out_dir, run, log)
    table = rep.tables.get("paper_table") or rep.tables.get("refit_test") or []
    if table:
        t = Table(title=f"{experiment}: test F1 (%), mean ± sd over seeds; * p <= 0.05 vs baseline; (paper)")
        for c in table[0]:
            t.add_column(str(c))
        for r in table:
            t.add_row(
                *(escape(str(v)) for v in r.values())
            )  # a composite's row is "multi [disease-chemical]": not markup
        out.print(t)
    out.print(
        f"report: {rep.out_dir / 'report.html'}  (tables: {', '.join(f'{k}.csv' for k in rep.tables)}, report.md)"
    )


def register(app: typer.Typer) -> None:
    app.command()(tune)
    app.command()(sweep)
    app.command()(report)
