"""Tables of a report: scores in %, paper-shaped rows, Markdown, CSV, and the self-contained HTML page."""

from __future__ import annotations

import base64
import csv
import html
from pathlib import Path


def pct(x, sd=None) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.2f}" + (f" ± {100 * sd:.2f}" if sd is not None else "")


def frac(f: float) -> str:
    return f"{100 * f:g} %"


def _sd(s: dict, k: str):
    return s[f"{k}_sd"] if s["seeds"] > 1 else None  # one seed has no spread to show


def summary_table(summary: list[dict]) -> list[dict]:
    """The summary as printed: P/R/F1 in %, mean ± sd over seeds."""
    return [
        {
            "dataset": s["dataset"],
            "training data": frac(s["train_fraction"]),
            "variant": s["variant"],
            "seeds": s["seeds"],
            "P": pct(s["precision_mean"], _sd(s, "precision")),
            "R": pct(s["recall_mean"], _sd(s, "recall")),
            "F1": pct(s["f1_mean"], _sd(s, "f1")),
            "paper F1": "-" if s["paper_f1"] is None else f"{s['paper_f1']:.2f}",
            "ΔF1 vs baseline": "-" if s["delta_f1"] is None else f"{100 * s['delta_f1']:+.2f}",
            "p (bootstrap)": "-" if s["p_value"] is None else f"{s['p_value']:.3f}",
        }
        for s in summary
    ]


def paper_shaped(summary: list[dict]) -> list[dict]:
    """Rows = variants, columns = datasets (x fractions when several): F1 mean ± sd (paper)."""
    fracs = sorted({s["train_fraction"] for s in summary}, reverse=True)
    cols = []
    for ds in sorted({s["dataset"] for s in summary}):
        for fr in fracs:
            if any(s["dataset"] == ds and s["train_fraction"] == fr for s in summary):
                cols.append((ds, fr, ds if len(fracs) == 1 else f"{ds} {frac(fr)}"))
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
            row[label] = pct(s["f1_mean"], _sd(s, "f1")) + star + paper
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
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return path


_CSS = (
    "body{font-family:sans-serif;margin:2em;max-width:1400px;color:#222}\n"
    "table{border-collapse:collapse;margin:0.5em 0 1.5em}"
    "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}\n"
    "th{background:#eee}td:first-child,th:first-child{text-align:left}"
    "img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}\n"
    ".meta td{text-align:left}"
)


def html_table(rows: list[dict], cls: str = "") -> str:
    if not rows:
        return "<p>(no rows)</p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r[c]))}</td>" for c in cols) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def write_html(
    path: Path, title: str, meta: dict, tables: dict[str, list[dict]], images: dict[str, Path], notes: str = ""
) -> Path:
    """One page, no scripts, images inlined as base64: it opens offline from a file or an artifact."""
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
        html_table([{"": k, "value": v} for k, v in meta.items()], "meta"),
    ]
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
