"""A study's runs in MLflow -> rows, summaries over seeds, paired-bootstrap p-values."""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ...data.tags import spans
from ...errors import BionerError
from ...infer.metrics import paired_bootstrap, sentence_counts
from ..tags import DATASET, KIND, PARENT, SWEEP_CORPORA, SWEEP_FRACTION, SWEEP_SEED, SWEEP_VARIANT, Kind

BOOTSTRAP_RESAMPLES = 1000


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
    for kind in (Kind.SWEEP, Kind.TUNE):
        found += client.search_runs(
            [exp.experiment_id], f"tags.`{KIND}` = '{kind}'", order_by=["attributes.start_time DESC"], max_results=1
        )
    if not found:
        raise BionerError(
            f"--experiment {experiment}: no sweep or tuning job found (run `bioner sweep` or `bioner tune` first)"
        )
    return max(found, key=lambda r: r.info.start_time)


def children(client, parent, kind: str):
    return client.search_runs(
        [parent.info.experiment_id],
        f"tags.`{PARENT}` = '{parent.info.run_id}' and tags.`{KIND}` = '{kind}'",
        max_results=10000,
    )


def cell_rows(client, parent) -> list[dict]:
    """One row per finished cell: its labels and test scores (fractions in 0..1). A cell of a
    composite dataset adds one row per member corpus, variant `<variant> [<composite>]`, scored on
    that corpus alone: it sits beside the member's own model and is compared with it."""
    rows = []
    for r in children(client, parent, Kind.CELL):
        split = r.data.params.get("eval_split", "test")
        m = r.data.metrics
        if r.info.status != "FINISHED" or f"{split}_f1" not in m:
            continue
        t = r.data.tags
        row = {
            "dataset": t[DATASET],
            "variant": t[SWEEP_VARIANT],
            "train_fraction": float(t[SWEEP_FRACTION]),
            "seed": int(t[SWEEP_SEED]),
            "precision": m[f"{split}_precision"],
            "recall": m[f"{split}_recall"],
            "f1": m[f"{split}_f1"],
            "beta": float(r.data.params["beta"]),
            "query_source": r.data.params["query_source"],
            "epochs": int(r.data.params["epochs"]),
            "train_seconds": m.get("train_seconds"),
            "run_id": r.info.run_id,
        }
        rows.append(row)
        for c in filter(None, t.get(SWEEP_CORPORA, "").split(",")):
            if f"{split}_{c}_f1" in m:
                rows.append(
                    {
                        **row,
                        "dataset": c,
                        "variant": f"{row['variant']} [{row['dataset']}]",
                        "composite": row["dataset"],
                        "of_variant": row["variant"],
                        "corpus": c,
                        **{k: m[f"{split}_{c}_{k}"] for k in ("precision", "recall", "f1")},
                    }
                )
    rows.sort(key=lambda x: (x["dataset"], x["train_fraction"], x["variant"], x["seed"]))
    return rows


def _read_predictions(path: Path) -> tuple[list[list[str]], list[list[str]], list[str]]:
    """Gold and predicted tags per sentence, and each sentence's corpus ("" in files without the column)."""
    gold, pred, corpus, g, p, c = [], [], [], [], [], ""
    with open(path, encoding="utf-8") as f:
        next(f)  # header
        for line in f:
            line = line.rstrip("\n")
            if not line:
                if g:
                    gold.append(g), pred.append(p), corpus.append(c)
                g, p = [], []
                continue
            fields = line.split("\t")
            g.append(fields[1]), p.append(fields[2])
            c = fields[3] if len(fields) > 3 else ""
    if g:
        gold.append(g), pred.append(p), corpus.append(c)
    return gold, pred, corpus


class Counts:
    """Per-sentence (tp, predicted, gold) counts of a run's logged test predictions, cached."""

    def __init__(self, client):
        self.client, self.cache, self.tmp = client, {}, tempfile.TemporaryDirectory()

    def __call__(self, run_id: str, corpus: str | None = None) -> np.ndarray:
        """Counts of every test sentence of the run, or of one corpus's sentences (a composite's member)."""
        if run_id not in self.cache:
            d = Path(self.client.download_artifacts(run_id, "predictions", self.tmp.name + "/" + run_id))
            files = sorted(d.glob("*.tsv"))
            if not files:
                raise BionerError(f"run {run_id}: no predictions artifact (needed for the bootstrap test)")
            gold, pred, corpora = _read_predictions(files[0])
            types = sorted({t for s in gold + pred for t, *_ in spans(s)}) or ["-"]
            self.cache[run_id] = (sentence_counts(gold, pred, types).sum(axis=1, keepdims=True), np.array(corpora))
        counts, corpora = self.cache[run_id]
        return counts if corpus is None else counts[corpora == corpus]


def mean_sd(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def summarize(
    rows: list[dict], baseline: str | None, counts=None, paper_f1: Callable[..., float | None] = lambda *a: None
) -> list[dict]:
    """Mean +/- sd per (dataset, fraction, variant), the paper's F1, and the bootstrap p-value."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["train_fraction"], r["variant"]), []).append(r)
    out = []
    for (ds, fr, var), rs in groups.items():
        row = {"dataset": ds, "train_fraction": fr, "variant": var, "seeds": len(rs)}
        for k in ("precision", "recall", "f1"):
            row[f"{k}_mean"], row[f"{k}_sd"] = mean_sd([r[k] for r in rs])
        row["paper_f1"] = paper_f1(ds, rs[0]["beta"], rs[0]["query_source"], fr)
        row["delta_f1"], row["p_value"], row["paired_seeds"] = None, None, 0
        # a composite's member row is compared with the member's own model of the same variant
        against = rs[0].get("of_variant") or baseline
        base = groups.get((ds, fr, against)) if against else None
        if base and var != against:
            by_seed = {r["seed"]: r for r in base}
            pairs = [(by_seed[r["seed"]], r) for r in rs if r["seed"] in by_seed]
            if pairs:
                row["delta_f1"] = row["f1_mean"] - mean_sd([b["f1"] for b in base])[0]
                if counts is not None:
                    a = np.concatenate([counts(b["run_id"]) for b, _ in pairs])
                    b_ = np.concatenate([counts(v["run_id"], v.get("corpus")) for _, v in pairs])
                    row["p_value"] = paired_bootstrap(a, b_, BOOTSTRAP_RESAMPLES, seed=0)[2]
                row["paired_seeds"] = len(pairs)
        out.append(row)
    return out
