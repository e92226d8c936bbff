"""Plots of a report: F1 by variant, F1 against the training fraction, per-epoch curves."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

from .tables import frac


def _plt():
    import matplotlib  # lazy (platform/README.md); the Agg backend must be chosen before pyplot loads

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
    for ax, (ds, fr) in zip(axes[0], groups, strict=True):
        ss = [s for s in summary if (s["dataset"], s["train_fraction"]) == (ds, fr)]
        x = np.arange(len(ss))
        mean = np.array([100 * s["f1_mean"] for s in ss])
        sd = np.array([100 * s["f1_sd"] for s in ss])
        ax.bar(x, mean, yerr=sd, capsize=4, color="#4c72b0", label="this platform (mean ± sd)")
        paper = [(i, s["paper_f1"]) for i, s in enumerate(ss) if s["paper_f1"] is not None]
        if paper:
            ax.scatter(
                *zip(*paper, strict=True), marker="_", s=500, color="black", linewidths=2, label="paper", zorder=3
            )
        vals = list(mean - sd) + list(mean + sd) + [p for _, p in paper]
        lo, hi = min(vals), max(vals)
        ax.set_ylim(max(0.0, lo - 0.15 * (hi - lo) - 1), min(100.0, hi + 0.15 * (hi - lo) + 1))
        ax.set_xticks(x, [s["variant"] for s in ss], rotation=30, ha="right")
        ax.set_title(f"{ds}, {frac(fr)} of training data", fontsize=10)
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
    for ax, ds in zip(axes[0], datasets, strict=True):
        for k, var in enumerate(dict.fromkeys(s["variant"] for s in summary)):
            ss = sorted(
                (s for s in summary if s["dataset"] == ds and s["variant"] == var), key=lambda s: s["train_fraction"]
            )
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
                ax.plot(*zip(*paper, strict=True), "s--", color=color, alpha=0.6, label=f"{var}, paper")
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
    for ax, (key, lines) in zip(axes[0], panels, strict=True):
        for label, (steps, vals) in lines.items():
            ax.plot(steps, vals, "o-", label=label, markersize=3)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_title(key, fontsize=10)
        if len(lines) <= 12:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)
