"""`bioner report`: a sweep (or a tuning job) in MLflow -> tables, plots and one HTML page.

Tables follow the paper's: P/R/F1 in %, mean +/- sd over seeds, the paper's F1 alongside, and a
paired bootstrap p-value against the single-task baseline of the same dataset and training
fraction. Seeds are paired (seed i of the variant with seed i of the baseline) and their test
sentences pooled, so the test asks whether the variant beats the baseline across seeds rather
than for one lucky seed.
"""

from __future__ import annotations

import base64
import csv
import html
import statistics
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .errors import BionerError

# The paper's test F1 (Tong et al. 2022, see METHOD.md): (dataset, method, fraction) -> F1 in %.
# method: "single" for the BioBERT baseline, else the query source of the multi-task model.
_DATASETS = ("bc2gm", "bc5cdr-chem", "ncbi-disease")
_ABLATION = {
    "none": (84.44, 93.69, 88.75), "annotation": (84.84, 93.52, 89.43), "wikipedia": (84.37, 93.90, 89.08),
    "dictionary": (84.31, 93.51, 89.23), "random": (84.23, 93.35, 88.18),
}
PAPER_F1: dict[tuple[str, str, float], float] = {
    **{(d, "single", 1.0): f for d, f in zip(_DATASETS, (84.38, 93.60, 89.00))},
    **{(d, q, 1.0): f for q, fs in _ABLATION.items() for d, f in zip(_DATASETS, fs)},
    **{("ncbi-disease", "single", fr): f for fr, f in ((0.5, 88.62), (0.25, 85.79), (0.1, 80.10))},
    # The paper's low-resource MRC row uses its best NCBI query (annotation).
    **{("ncbi-disease", "annotation", fr): f for fr, f in ((0.5, 88.89), (0.25, 86.50), (0.1, 82.08))},
}
BOOTSTRAP_RESAMPLES = 1000


def paper_f1(dataset: str, beta: float, query_source: str, fraction: float) -> float | None:
    method = "single" if beta == 0 else query_source
    return PAPER_F1.get((dataset, method, round(fraction, 4)))


@dataclass
class Report:
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    tables: dict[str, list[dict]] = field(default_factory=dict)  # name -> rows, also written as CSV/Markdown


# --------------------------------------------------------------------------- collecting


def find_parent(client, experiment: str, run_id: str | None = None):
    """The given parent run, else the experiment's newest sweep or tuning job."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise BionerError(f"--experiment {experiment}: no such experiment in the tracking store")
    if run_id:
        run = client.get_run(run_id)
        if run.info.experiment_id != exp.experiment_id:
            raise BionerError(f"--run {run_id}: not a run of experiment {experiment}")
        return run
    found = []
    for kind in ("sweep", "tune"):
        found += client.search_runs([exp.experiment_id], f"tags.`bioner.kind` = '{kind}'", order_by=["attributes.start_time DESC"], max_results=1)
    if not found:
        raise BionerError(f"--experiment {experiment}: no sweep or tuning job found (run `bioner sweep` or `bioner tune` first)")
    return max(found, key=lambda r: r.info.start_time)


def _children(client, parent, kind: str):
    return client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}' and tags.`bioner.kind` = '{kind}'",
        max_results=10000,
    )


def cell_rows(client, parent) -> list[dict]:
    """One row per finished cell: its labels and test scores (fractions in 0..1)."""
    rows = []
    for r in _children(client, parent, "cell"):
        split = r.data.params.get("eval_split", "test")
        m = r.data.metrics
        if r.info.status != "FINISHED" or f"{split}_f1" not in m:
            continue
        t = r.data.tags
        rows.append({
            "dataset": t["dataset"], "variant": t["sweep.variant"], "train_fraction": float(t["sweep.train_fraction"]),
            "seed": int(t["sweep.seed"]), "precision": m[f"{split}_precision"], "recall": m[f"{split}_recall"],
            "f1": m[f"{split}_f1"], "beta": float(r.data.params["beta"]), "query_source": r.data.params["query_source"],
            "epochs": int(r.data.params["epochs"]), "train_seconds": m.get("train_seconds"), "run_id": r.info.run_id,
        })
    rows.sort(key=lambda x: (x["dataset"], x["train_fraction"], x["variant"], x["seed"]))
    return rows


def _read_predictions(path: Path) -> tuple[list[list[str]], list[list[str]]]:
    gold, pred, g, p = [], [], [], []
    with open(path, encoding="utf-8") as f:
        next(f)  # header
        for line in f:
            line = line.rstrip("\n")
            if not line:
                if g:
                    gold.append(g), pred.append(p)
                g, p = [], []
                continue
            _, a, b = line.split("\t")
            g.append(a), p.append(b)
    if g:
        gold.append(g), pred.append(p)
    return gold, pred


class _Counts:
    """Per-sentence (tp, predicted, gold) counts of a run's logged test predictions, cached."""

    def __init__(self, client):
        self.client, self.cache, self.tmp = client, {}, tempfile.TemporaryDirectory()

    def __call__(self, run_id: str) -> np.ndarray:
        from .evaluation import sentence_counts, spans

        if run_id not in self.cache:
            d = Path(self.client.download_artifacts(run_id, "predictions", self.tmp.name + "/" + run_id))
            files = sorted(d.glob("*.tsv"))
            if not files:
                raise BionerError(f"run {run_id}: no predictions artifact (needed for the bootstrap test)")
            gold, pred = _read_predictions(files[0])
            types = sorted({t for s in gold + pred for t, *_ in spans(s)}) or ["-"]
            self.cache[run_id] = sentence_counts(gold, pred, types).sum(axis=1, keepdims=True)
        return self.cache[run_id]


def _mean_sd(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def summarize(rows: list[dict], baseline: str | None, counts=None) -> list[dict]:
    """Mean +/- sd per (dataset, fraction, variant), the paper's F1, and the bootstrap p-value."""
    from .evaluation import paired_bootstrap

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["train_fraction"], r["variant"]), []).append(r)
    out = []
    for (ds, fr, var), rs in groups.items():
        row = {"dataset": ds, "train_fraction": fr, "variant": var, "seeds": len(rs)}
        for k in ("precision", "recall", "f1"):
            row[f"{k}_mean"], row[f"{k}_sd"] = _mean_sd([r[k] for r in rs])
        row["paper_f1"] = paper_f1(ds, rs[0]["beta"], rs[0]["query_source"], fr)
        row["delta_f1"], row["p_value"], row["paired_seeds"] = None, None, 0
        base = groups.get((ds, fr, baseline)) if baseline else None
        if base and var != baseline:
            by_seed = {r["seed"]: r for r in base}
            pairs = [(by_seed[r["seed"]], r) for r in rs if r["seed"] in by_seed]
            if pairs:
                row["delta_f1"] = row["f1_mean"] - _mean_sd([b["f1"] for b in base])[0]
                if counts is not None:
                    a = np.concatenate([counts(b["run_id"]) for b, _ in pairs])
                    b_ = np.concatenate([counts(v["run_id"]) for _, v in pairs])
                    row["p_value"] = paired_bootstrap(a, b_, BOOTSTRAP_RESAMPLES, seed=0)[2]
                row["paired_seeds"] = len(pairs)
        out.append(row)
    return out


# --------------------------------------------------------------------------- tables


def _pct(x, sd=None) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.2f}" + (f" ± {100 * sd:.2f}" if sd is not None else "")


def _frac(f: float) -> str:
    return f"{100 * f:g} %"


def _sd(s: dict, k: str):
    return s[f"{k}_sd"] if s["seeds"] > 1 else None  # one seed has no spread to show


def summary_table(summary: list[dict]) -> list[dict]:
    """The summary as printed: P/R/F1 in %, mean ± sd over seeds."""
    return [{
        "dataset": s["dataset"], "training data": _frac(s["train_fraction"]), "variant": s["variant"], "seeds": s["seeds"],
        "P": _pct(s["precision_mean"], _sd(s, "precision")), "R": _pct(s["recall_mean"], _sd(s, "recall")),
        "F1": _pct(s["f1_mean"], _sd(s, "f1")),
        "paper F1": "-" if s["paper_f1"] is None else f"{s['paper_f1']:.2f}",
        "ΔF1 vs baseline": "-" if s["delta_f1"] is None else f"{100 * s['delta_f1']:+.2f}",
        "p (bootstrap)": "-" if s["p_value"] is None else f"{s['p_value']:.3f}",
    } for s in summary]


def paper_shaped(summary: list[dict]) -> list[dict]:
    """Rows = variants, columns = datasets (x fractions when several): F1 mean ± sd (paper)."""
    fracs = sorted({s["train_fraction"] for s in summary}, reverse=True)
    cols = []
    for ds in sorted({s["dataset"] for s in summary}):
        for fr in fracs:
            if any(s["dataset"] == ds and s["train_fraction"] == fr for s in summary):
                cols.append((ds, fr, ds if len(fracs) == 1 else f"{ds} {_frac(fr)}"))
    variants = list(dict.fromkeys(s["variant"] for s in summary))
    index = {(s["dataset"], s["train_fraction"], s["variant"]): s for s in summary}
    rows = []
    for v in variants:
        row = {"variant": v}
        for ds, fr, label in cols:
            s = index.get((ds, fr, v))
            if s is None:
                row[label] = "-"
                continue
            paper = "" if s["paper_f1"] is None else f" ({s['paper_f1']:.2f})"
            star = "*" if s["p_value"] is not None and s["p_value"] <= 0.05 else ""
            row[label] = _pct(s["f1_mean"], _sd(s, "f1")) + star + paper
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    if not rows:
        return "(no rows)\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        if rows:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return path


# --------------------------------------------------------------------------- plots


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _plt().close(fig)
    return path


def plot_variants(summary: list[dict], path: Path, title: str) -> Path:
    """Bars of test F1 per variant with the sd over seeds; the paper's figure as a black tick."""
    plt = _plt()
    groups = sorted({(s["dataset"], s["train_fraction"]) for s in summary}, key=lambda g: (g[0], -g[1]))
    fig, axes = plt.subplots(1, len(groups), figsize=(max(5.0, 3.6 * len(groups)), 4.2), squeeze=False)
    for ax, (ds, fr) in zip(axes[0], groups):
        ss = [s for s in summary if (s["dataset"], s["train_fraction"]) == (ds, fr)]
        x = np.arange(len(ss))
        mean = np.array([100 * s["f1_mean"] for s in ss])
        sd = np.array([100 * s["f1_sd"] for s in ss])
        ax.bar(x, mean, yerr=sd, capsize=4, color="#4c72b0", label="this platform (mean ± sd)")
        paper = [(i, s["paper_f1"]) for i, s in enumerate(ss) if s["paper_f1"] is not None]
        if paper:
            ax.scatter(*zip(*paper), marker="_", s=500, color="black", linewidths=2, label="paper", zorder=3)
        vals = list(mean - sd) + list(mean + sd) + [p for _, p in paper]
        lo, hi = min(vals), max(vals)
        ax.set_ylim(max(0.0, lo - 0.15 * (hi - lo) - 1), min(100.0, hi + 0.15 * (hi - lo) + 1))
        ax.set_xticks(x, [s["variant"] for s in ss], rotation=30, ha="right")
        ax.set_title(f"{ds}, {_frac(fr)} of training data", fontsize=10)
        ax.set_ylabel("test F1 (%)")
    axes[0][0].legend(fontsize=8, loc="lower left")
    fig.suptitle(title)
    return _save(fig, path)


def plot_low_resource(summary: list[dict], path: Path) -> Path | None:
    """F1 against the training fraction, one line per variant with a band of ± sd over seeds."""
    fracs = sorted({s["train_fraction"] for s in summary})
    if len(fracs) < 2:
        return None
    plt = _plt()
    datasets = sorted({s["dataset"] for s in summary})
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.0 * len(datasets), 4.2), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        for k, var in enumerate(dict.fromkeys(s["variant"] for s in summary)):
            ss = sorted((s for s in summary if s["dataset"] == ds and s["variant"] == var), key=lambda s: s["train_fraction"])
            if not ss:
                continue
            color = f"C{k}"
            x = np.array([100 * s["train_fraction"] for s in ss])
            m = np.array([100 * s["f1_mean"] for s in ss])
            sd = np.array([100 * s["f1_sd"] for s in ss])
            ax.plot(x, m, "o-", color=color, label=f"{var} (mean ± sd)")
            ax.fill_between(x, m - sd, m + sd, color=color, alpha=0.2)
            paper = [(100 * s["train_fraction"], s["paper_f1"]) for s in ss if s["paper_f1"] is not None]
            if paper:
                ax.plot(*zip(*paper), "s--", color=color, alpha=0.6, label=f"{var}, paper")
        ax.set_xlabel("training sentences kept (%)")
        ax.set_ylabel("test F1 (%)")
        ax.set_title(f"low resource: {ds}", fontsize=10)
        ax.legend(fontsize=8)
    return _save(fig, path)


def _history(client, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.timestamp)}


def plot_epochs(client, series: dict[str, list[str]], keys: list[str], path: Path, title: str) -> Path | None:
    """Per-epoch curves: one line per series (mean over its runs), one panel per metric."""
    plt = _plt()
    panels = []
    for key in keys:
        lines = {}
        for label, run_ids in series.items():
            hists = [h for h in (_history(client, r, key) for r in run_ids) if len(h) >= 1]
            steps = sorted(set().union(*hists)) if hists else []
            if steps:
                lines[label] = (steps, [statistics.fmean(h[s] for h in hists if s in h) for s in steps])
        if lines and max(len(s) for s, _ in lines.values()) >= 2:
            panels.append((key, lines))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.0), squeeze=False)
    for ax, (key, lines) in zip(axes[0], panels):
        for label, (steps, vals) in lines.items():
            ax.plot(steps, vals, "o-", label=label, markersize=3)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_title(key, fontsize=10)
        if len(lines) <= 12:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


# --------------------------------------------------------------------------- HTML


_CSS = """body{font-family:sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}
th{background:#eee}td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}
.meta td{text-align:left}"""


def html_table(rows: list[dict], cls: str = "") -> str:
    if not rows:
        return "<p>(no rows)</p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r[c]))}</td>" for c in cols) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def write_html(path: Path, title: str, meta: dict, tables: dict[str, list[dict]], images: dict[str, Path], notes: str = "") -> Path:
    """One page, no scripts, images inlined as base64: it opens offline from a file or an artifact."""
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             html_table([{"": k, "value": v} for k, v in meta.items()], "meta")]
    if notes:
        parts.append(f"<p>{html.escape(notes)}</p>")
    for name, rows in tables.items():
        parts.append(f"<h2>{html.escape(name)}</h2>" + html_table(rows))
    for name, p in images.items():
        data = base64.b64encode(p.read_bytes()).decode()
        parts.append(f"<h2>{html.escape(name)}</h2><img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- building


NOTES = ("P/R/F1: entity-level micro scores on the test split in %, mean ± sd over seeds. paper F1: Tong et al. 2022 "
         "(BioBERT v1.1, full training budget) where the paper has that cell. p: paired bootstrap over test sentences "
         f"({BOOTSTRAP_RESAMPLES} resamples, seeds paired and pooled) that the variant is not better than the baseline; "
         "* marks p <= 0.05.")


def build_report(experiment: str, tracking_uri: str, out_dir: Path | None = None, run_id: str | None = None, log: bool = True) -> Report:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    parent = find_parent(client, experiment, run_id)
    out = Path(out_dir or Path("dashboards") / "reports" / experiment).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rep = Report(out)
    kind = parent.data.tags.get("bioner.kind")
    meta = {"experiment": experiment, "parent run": parent.info.run_id, "kind": kind, "status": parent.info.status,
            "encoder": parent.data.tags.get("encoder", "-"), "git commit": parent.data.tags.get("git_commit", "-"),
            "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    if kind == "tune":
        images, notes = _tune_report(client, parent, rep), "Tuning trials score devel; refits train on train+devel and score test."
    else:
        images, notes = _sweep_report(client, parent, rep, meta), NOTES
    for name, rows in rep.tables.items():
        rep.files.append(write_csv(out / f"{name}.csv", rows))
    md = [f"# {experiment}\n", *(f"- {k}: {v}" for k, v in meta.items()), "", notes, ""]
    for name, rows in _display_tables(rep).items():
        md += [f"## {name}\n", markdown(rows)]
    (out / "report.md").write_text("\n".join(md), encoding="utf-8")
    rep.files.append(out / "report.md")
    rep.files += list(images.values())
    rep.files.append(write_html(out / "report.html", f"bioner report: {experiment}", meta, _display_tables(rep), images, notes))
    if log:
        for f in rep.files:
            client.log_artifact(parent.info.run_id, str(f), "report")
        _log_summary_metrics(client, parent.info.run_id, rep.tables.get("summary_raw", []))
    return rep


def _log_summary_metrics(client, parent_id: str, summary: list[dict]) -> None:
    """The summary as metrics of the parent run too, so the MLflow UI can chart and compare sweeps."""
    import time

    from mlflow.entities import Metric

    ts, batch = int(time.time() * 1000), []
    for s in summary:
        cell = f"{s['dataset']}/f{s['train_fraction']:g}/{s['variant']}"
        batch += [Metric(f"test_f1_mean/{cell}", s["f1_mean"], ts, 0), Metric(f"test_f1_sd/{cell}", s["f1_sd"], ts, 0)]
        if s["p_value"] is not None:
            batch.append(Metric(f"p_value/{cell}", s["p_value"], ts, 0))
    for i in range(0, len(batch), 900):  # MLflow takes at most 1000 metrics per batch
        client.log_batch(parent_id, metrics=batch[i : i + 900])


def _display_tables(rep: Report) -> dict[str, list[dict]]:
    """The tables for people (HTML, Markdown): scores in %, no raw duplicate of the summary."""
    out = {k: v for k, v in rep.tables.items() if k != "summary_raw"}
    if "runs" in out:
        out["runs"] = [{**r, "train_fraction": _frac(r["train_fraction"]), "precision": _pct(r["precision"]), "recall": _pct(r["recall"]),
                        "f1": _pct(r["f1"]), "train_seconds": "-" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}"}
                       for r in out["runs"]]
    return out


def _sweep_report(client, parent, rep: Report, meta: dict) -> dict[str, Path]:
    rows = cell_rows(client, parent)
    if not rows:
        raise BionerError(f"run {parent.info.run_id}: no finished cells yet")
    baseline = parent.data.tags.get("sweep.baseline") or None
    expected = int(parent.data.tags.get("sweep.cells", len(rows)))
    meta.update(baseline=baseline or "-", cells=f"{len(rows)} finished of {expected}")
    order = {v: k for k, v in enumerate((parent.data.tags.get("sweep.variants") or "").split(","))}
    rows.sort(key=lambda r: (r["dataset"], -r["train_fraction"], order.get(r["variant"], len(order)), r["variant"], r["seed"]))
    summary = summarize(rows, baseline, _Counts(client))  # in the sweep's variant order
    rep.tables["paper_table"] = paper_shaped(summary)
    rep.tables["summary"] = summary_table(summary)
    rep.tables["summary_raw"] = summary
    rep.tables["runs"] = [{k: r[k] for k in ("dataset", "train_fraction", "variant", "seed", "precision", "recall", "f1", "epochs",
                                              "train_seconds", "run_id")} for r in rows]
    images = {}
    queries = {r["query_source"] for r in rows if r["beta"] > 0}
    title = "query-source ablation" if len(queries) > 1 else "test F1 by variant"
    images[title] = plot_variants(summary, rep.out_dir / "variants.png", title)
    low = plot_low_resource(summary, rep.out_dir / "low_resource.png")
    if low:
        images["low resource"] = low
    series: dict[str, list[str]] = {}
    for r in rows:
        series.setdefault(f"{r['dataset']} {_frac(r['train_fraction'])} {r['variant']}", []).append(r["run_id"])
    split = client.get_run(rows[0]["run_id"]).data.params.get("eval_split", "test")
    ep = plot_epochs(client, series, ["train_loss", "train_loss_ner", "train_loss_mrc", f"{split}_f1", "devel_f1"],
                     rep.out_dir / "epochs.png", "per epoch (mean over seeds)")
    if ep:
        images["per-epoch curves"] = ep
    return images


def _tune_report(client, parent, rep: Report) -> dict[str, Path]:
    trials = _children(client, parent, "trial")
    rep.tables["trials"] = sorted(({
        "trial": t.info.run_name, "devel F1": _pct(t.data.metrics.get("devel_f1")),
        **{k: t.data.params.get(k, "-") for k in ("alpha", "beta", "learning_rate", "query_source")},
        "status": t.info.status, "stop reason": t.data.tags.get("stop_reason", ""),
    } for t in trials), key=lambda r: r["devel F1"], reverse=True)
    refits = [r for r in _children(client, parent, "refit") if "test_f1" in r.data.metrics]
    rows = [{"seed": r.data.params.get("seed"), **{k: _pct(r.data.metrics.get(f"test_{k}")) for k in ("precision", "recall", "f1")}}
            for r in refits]
    if refits:
        rows.append({"seed": "mean ± sd", **{k: _pct(*_mean_sd([r.data.metrics[f"test_{k}"] for r in refits]))
                                             for k in ("precision", "recall", "f1")}})
    rep.tables["refit_test"] = rows
    images = {}
    ep = plot_epochs(client, {t.info.run_name: [t.info.run_id] for t in trials}, ["devel_f1", "train_loss"],
                     rep.out_dir / "trials_epochs.png", "tuning trials per epoch")
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
