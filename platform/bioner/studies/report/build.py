"""`bioner report`: a sweep (or a tuning job) in MLflow -> tables, plots and one HTML page.

Tables follow the paper's: P/R/F1 in %, mean +/- sd over seeds, the paper's F1 alongside, and a
paired bootstrap p-value against the single-task baseline of the same dataset and training
fraction. Seeds are paired (seed i of the variant with seed i of the baseline) and their test
sentences pooled, so the test asks whether the variant beats the baseline across seeds rather
than for one lucky seed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ...errors import BionerError
from ...tracking.metrics import metric_key
from ..tags import ENCODER, GIT_COMMIT, KIND, STOP_REASON, SWEEP_BASELINE, SWEEP_CELLS, SWEEP_VARIANTS, Kind
from .collect import BOOTSTRAP_RESAMPLES, Counts, cell_rows, children, find_parent, mean_sd, summarize
from .paper import PaperF1
from .plots import plot_epochs, plot_low_resource, plot_variants
from .tables import frac, markdown, paper_shaped, pct, summary_table, write_csv, write_html


@dataclass
class Report:
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    tables: dict[str, list[dict]] = field(default_factory=dict)  # name -> rows, also written as CSV/Markdown


NOTES = (
    "P/R/F1: entity-level micro scores on the test split in %, mean ± sd over seeds. paper F1: Tong et al. 2022 "
    "(BioBERT v1.1, full training budget) where the paper has that cell. p: paired bootstrap over test sentences "
    f"({BOOTSTRAP_RESAMPLES} resamples, seeds paired and pooled) that the variant is not better than the baseline; * "
    "marks p <= 0.05."
)


def build_report(
    experiment: str,
    tracking_uri: str,
    out_dir: Path | None = None,
    run_id: str | list[str] | None = None,
    log: bool = True,
) -> Report:
    """`run_id`: the parent run, or several sweeps of one grid (the same cells run again with other
    seeds) whose cells are pooled: mean ± sd and the paired bootstrap then cover every seed. The
    first is the report's parent (its tags head the report; --log writes to it)."""
    from mlflow import MlflowClient  # lazy (platform/README.md)

    client = MlflowClient(tracking_uri)
    ids = [run_id] if isinstance(run_id, str) else list(run_id or [None])
    parents = [find_parent(client, experiment, i) for i in ids]
    parent = parents[0]
    out = Path(out_dir or Path("dashboards") / "reports" / experiment).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rep = Report(out)
    kind = parent.data.tags.get(KIND)
    meta = {
        "experiment": experiment,
        "parent run": ", ".join(p.info.run_id for p in parents),
        "kind": kind,
        "status": parent.info.status,
        "encoder": parent.data.tags.get(ENCODER, "-"),
        "git commit": parent.data.tags.get(GIT_COMMIT, "-"),
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    if kind == Kind.TUNE:
        if len(parents) > 1:
            raise BionerError("--run: several runs are pooled for sweeps only; a tuning job is reported alone")
        images, notes = (
            _tune_report(client, parent, rep),
            "Tuning trials score devel; refits train on train+devel and score test.",
        )
    else:
        images, notes = _sweep_report(client, parents, rep, meta), NOTES
    for name, rows in rep.tables.items():
        rep.files.append(write_csv(out / f"{name}.csv", rows))
    md = [f"# {experiment}\n", *(f"- {k}: {v}" for k, v in meta.items()), "", notes, ""]
    for name, rows in _display_tables(rep).items():
        md += [f"## {name}\n", markdown(rows)]
    (out / "report.md").write_text("\n".join(md), encoding="utf-8")
    rep.files.append(out / "report.md")
    rep.files += list(images.values())
    rep.files.append(
        write_html(out / "report.html", f"bioner report: {experiment}", meta, _display_tables(rep), images, notes)
    )
    if log:
        for f in rep.files:
            client.log_artifact(parent.info.run_id, str(f), "report")
        _log_summary_metrics(client, parent.info.run_id, rep.tables.get("summary_raw", []))
    return rep


def _log_summary_metrics(client, parent_id: str, summary: list[dict]) -> None:
    """The summary as metrics of the parent run too, so the MLflow UI can chart and compare sweeps."""
    from mlflow.entities import Metric  # lazy (platform/README.md)

    ts, batch = int(time.time() * 1000), []
    for s in summary:
        cell = f"{s['dataset']}/f{s['train_fraction']:g}/{s['variant']}"
        # a composite's rows are named "multi [disease-chemical]": brackets are not in MLflow's set
        batch += [
            Metric(metric_key(f"test_f1_mean/{cell}"), s["f1_mean"], ts, 0),
            Metric(metric_key(f"test_f1_sd/{cell}"), s["f1_sd"], ts, 0),
        ]
        if s["p_value"] is not None:
            batch.append(Metric(metric_key(f"p_value/{cell}"), s["p_value"], ts, 0))
    for i in range(0, len(batch), 900):  # MLflow takes at most 1000 metrics per batch
        client.log_batch(parent_id, metrics=batch[i : i + 900])


def _display_tables(rep: Report) -> dict[str, list[dict]]:
    """The tables for people (HTML, Markdown): scores in %, no raw duplicate of the summary."""
    out = {k: v for k, v in rep.tables.items() if k != "summary_raw"}
    if "runs" in out:
        out["runs"] = [
            {
                **r,
                "train_fraction": frac(r["train_fraction"]),
                "precision": pct(r["precision"]),
                "recall": pct(r["recall"]),
                "f1": pct(r["f1"]),
                "train_seconds": "-" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}",
            }
            for r in out["runs"]
        ]
    return out


def _sweep_report(client, parents: list, rep: Report, meta: dict) -> dict[str, Path]:
    parent = parents[0]
    rows = _pooled_rows(client, parents)
    if not rows:
        raise BionerError(f"run {parent.info.run_id}: no finished cells yet")
    baseline = parent.data.tags.get(SWEEP_BASELINE) or None
    expected = sum(int(p.data.tags.get(SWEEP_CELLS, 0)) for p in parents) or len(rows)
    # a composite cell gives a row per member corpus (and one for the composite): count runs, not rows
    meta.update(baseline=baseline or "-", cells=f"{len({r['run_id'] for r in rows})} finished of {expected}")
    order = {v: k for k, v in enumerate((parent.data.tags.get(SWEEP_VARIANTS) or "").split(","))}
    rows.sort(
        key=lambda r: (r["dataset"], -r["train_fraction"], order.get(r["variant"], len(order)), r["variant"], r["seed"])
    )
    summary = summarize(rows, baseline, Counts(client), PaperF1())  # in the sweep's variant order
    rep.tables["paper_table"] = paper_shaped(summary)
    rep.tables["summary"] = summary_table(summary)
    rep.tables["summary_raw"] = summary
    rep.tables["runs"] = [
        {
            k: r[k]
            for k in (
                "dataset",
                "train_fraction",
                "variant",
                "seed",
                "precision",
                "recall",
                "f1",
                "epochs",
                "train_seconds",
                "run_id",
            )
        }
        for r in rows
    ]
    images = {}
    queries = {r["query_source"] for r in rows if r["beta"] > 0}
    title = "query-source ablation" if len(queries) > 1 else "test F1 by variant"
    images[title] = plot_variants(summary, rep.out_dir / "variants.png", title)
    low = plot_low_resource(summary, rep.out_dir / "low_resource.png")
    if low:
        images["low resource"] = low
    series: dict[str, list[str]] = {}
    for r in rows:
        series.setdefault(f"{r['dataset']} {frac(r['train_fraction'])} {r['variant']}", []).append(r["run_id"])
    split = client.get_run(rows[0]["run_id"]).data.params.get("eval_split", "test")
    ep = plot_epochs(
        client,
        series,
        ["train_loss", "train_loss_ner", "train_loss_mrc", f"{split}_f1", "devel_f1"],
        rep.out_dir / "epochs.png",
        "per epoch (mean over seeds)",
    )
    if ep:
        images["per-epoch curves"] = ep
    return images


def _pooled_rows(client, parents: list) -> list[dict]:
    """The finished cells of one sweep, or of several sweeps of the same grid (other seeds)."""
    first = parents[0]
    ids = [p.info.run_id for p in parents]
    if len(set(ids)) < len(ids):
        raise BionerError(f"--run: {next(i for i in ids if ids.count(i) > 1)} is given twice")
    rows, seen = [], {}
    for p in parents:
        if p.data.tags.get(KIND) != Kind.SWEEP:
            raise BionerError(f"--run {p.info.run_id}: not a sweep; only sweeps are pooled")
        for tag in (SWEEP_VARIANTS, SWEEP_BASELINE):
            if p.data.tags.get(tag) != first.data.tags.get(tag):
                raise BionerError(
                    f"--run {p.info.run_id}: its {tag} ({p.data.tags.get(tag)}) differs from --run "
                    f"{first.info.run_id}'s ({first.data.tags.get(tag)}): not the same grid"
                )
        for r in cell_rows(client, p):
            key = (r["dataset"], r["train_fraction"], r["variant"], r["seed"])
            if seen.setdefault(key, p.info.run_id) != p.info.run_id:
                raise BionerError(
                    f"--run: cell {key[0]} {frac(key[1])} {key[2]} seed {key[3]} is in both {seen[key]} and "
                    f"{p.info.run_id}"
                )
            rows.append(r)
    return rows


def _tune_report(client, parent, rep: Report) -> dict[str, Path]:
    trials = children(client, parent, Kind.TRIAL)
    rep.tables["trials"] = sorted(
        (
            {
                "trial": t.info.run_name,
                "devel F1": pct(t.data.metrics.get("devel_f1")),
                **{k: t.data.params.get(k, "-") for k in ("alpha", "beta", "learning_rate", "query_source")},
                "status": t.info.status,
                "stop reason": t.data.tags.get(STOP_REASON, ""),
            }
            for t in trials
        ),
        key=lambda r: r["devel F1"],
        reverse=True,
    )
    refits = [r for r in children(client, parent, Kind.REFIT) if "test_f1" in r.data.metrics]
    rows = [
        {
            "seed": r.data.params.get("seed"),
            **{k: pct(r.data.metrics.get(f"test_{k}")) for k in ("precision", "recall", "f1")},
        }
        for r in refits
    ]
    if refits:
        rows.append(
            {
                "seed": "mean ± sd",
                **{
                    k: pct(*mean_sd([r.data.metrics[f"test_{k}"] for r in refits]))
                    for k in ("precision", "recall", "f1")
                },
            }
        )
    rep.tables["refit_test"] = rows
    images = {}
    ep = plot_epochs(
        client,
        {t.info.run_name: [t.info.run_id] for t in trials},
        ["devel_f1", "train_loss"],
        rep.out_dir / "trials_epochs.png",
        "tuning trials per epoch",
    )
    if ep:
        images["devel F1 per epoch"] = ep
    for name in ("optuna_history.png", "optuna_importances.png"):
        try:  # made by `bioner tune` on the parent run; importances need two finished trials
            p = Path(client.download_artifacts(parent.info.run_id, f"plots/{name}", str(rep.out_dir)))
        except Exception:
            continue
        target = rep.out_dir / name
        if p != target:
            p.replace(target)
        images[name.removesuffix(".png").replace("_", " ")] = target
    if (rep.out_dir / "plots").is_dir() and not any((rep.out_dir / "plots").iterdir()):
        (rep.out_dir / "plots").rmdir()
    return images
