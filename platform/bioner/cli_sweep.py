"""`bioner sweep` and `bioner report`, registered on the main app by cli.py."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

out = Console()

SET_HELP = "Override a sweep or training key: key=value, value parsed as YAML (e.g. --set seeds=5, --set profile=gpu). Repeatable."


def sweep(
    config: Path = typer.Argument(..., help="YAML sweep config: training keys for every cell plus profile, profiles, seeds, datasets, variants, train_fractions, per_dataset."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
    resume: bool = typer.Option(False, "--resume", help="Continue the experiment's interrupted sweep without redoing finished cells."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write the report (tables, plots, HTML) when the sweep ends."),
    report_dir: Optional[Path] = typer.Option(None, "--report-dir", help="Report folder (default: dashboards/reports/<experiment>)."),
):
    """Run a grid of training runs (datasets x variants x seeds, optionally x training fractions) on Ray Tune, one nested MLflow run per cell."""
    from .sweep import grid, load_sweep, run_sweep

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
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Report folder (default: dashboards/reports/<experiment>)."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///outputs/mlflow.db)."),
    run: Optional[str] = typer.Option(None, "--run", help="Parent run id (default: the experiment's newest sweep or tuning job)."),
    log: bool = typer.Option(True, "--log/--no-log", help="Also log the report's files to the parent MLflow run (artifact folder report/)."),
):
    """Tables (P/R/F1 mean ± sd, the paper's F1, bootstrap p vs the baseline), plots and one self-contained HTML page."""
    from .cli import _store_uri

    _report(experiment, _store_uri(tracking_uri), out_dir, run, log)


def _report(experiment: str, uri: str, out_dir: Optional[Path], run: Optional[str], log: bool = True) -> None:
    from .report import build_report

    with out.status("building the report (bootstrap tests, plots)"):
        rep = build_report(experiment, uri, out_dir, run, log)
    table = rep.tables.get("paper_table") or rep.tables.get("refit_test") or []
    if table:
        t = Table(title=f"{experiment}: test F1 (%), mean ± sd over seeds; * p <= 0.05 vs baseline; (paper)")
        for c in table[0]:
            t.add_column(str(c))
        for r in table:
            t.add_row(*(str(v) for v in r.values()))
        out.print(t)
    out.print(f"report: {rep.out_dir / 'report.html'}  (tables: {', '.join(f'{k}.csv' for k in rep.tables)}, report.md)")


def register(app: typer.Typer) -> None:
    app.command()(sweep)
    app.command()(report)
