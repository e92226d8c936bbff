"""`bioner datasets` and `bioner datasets check`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from ..config import SPLITS
from ..data.doc_corpus import Conversion
from ..data.iob import read_split, scan_split, split_stats
from ..data.specs import list_specs, load_spec
from ..errors import BionerError
from .common import out

datasets_app = typer.Typer(help="List dataset specs, or check one.", invoke_without_command=True)


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
    t = Table(title="datasets")
    for c in ("name", "types", "train sent/ent", "devel sent/ent", "test sent/ent", "spec"):
        t.add_column(c)
    for path in list_specs():
        try:
            spec = load_spec(path)
            splits = [read_split(spec, s) if any(m.has_split(s) for m in spec.members) else None for s in SPLITS]
            t.add_row(spec.name, ", ".join(spec.types), *(_counts(sp) for sp in splits), _rel(path))
            if len(spec.members) > 1:  # a composite: one line per member corpus
                for m in spec.members:
                    t.add_row(
                        f"  {m.name}",
                        ", ".join(m.types),
                        *(
                            _counts(sp and sp.select([i for i, c in enumerate(sp.corpus) if c == m.name]))
                            for sp in splits
                        ),
                        "",
                    )
        except BionerError as e:
            t.add_row(
                path.stem, "[red]invalid[/]", "", "", "", escape(str(e))
            )  # an error quotes YAML: brackets are not markup
    out.print(t)


def _counts(split) -> str:
    if split is None:
        return "-"
    st = split_stats(split)
    return f"{st['sentences']:,} / {st['entities']:,}"


@datasets_app.command("check")
def datasets_check(spec: str = typer.Argument(..., help="Dataset name or spec path.")):
    """Validate a spec (every member of a composite) and every line of its corpus files; print counts per split and type."""  # noqa: E501 - typer prints this docstring's line breaks as they are in `bioner --help`
    s = load_spec(spec)
    t = Table(title=f"{s.name} ({s.path})")
    for c in ("corpus", "split", "sentences", "tokens", "entities", "longest sentence (words)", "per type"):
        t.add_column(c)
    conversions = []
    for m in s.members:
        for name in SPLITS:
            if not m.has_split(name):
                t.add_row(m.name, name, "-", "-", "-", "-", "not given")
                continue
            conv = Conversion() if m.documents else None
            st = scan_split(m, name, conv)  # streams: a corpus of any size is checked in constant memory
            per = ", ".join(f"{k}: {v}" for k, v in st["per_type"].items())
            t.add_row(
                m.name,
                name,
                f"{st['sentences']:,}",
                f"{st['tokens']:,}",
                f"{st['entities']:,}",
                str(st["max_words"]),
                per,
            )
            if conv is not None:
                conversions.append((m, name, conv))
    out.print(t)
    for m, name, conv in conversions:
        _print_conversion(m, name, conv)
    members = f" ({len(s.members)} corpora)" if len(s.members) > 1 else ""
    out.print(f"[green]ok[/]: {s.name}{members}, types {', '.join(s.types)}")


def _print_conversion(m, split: str, conv: Conversion) -> None:
    """What turning documents into training sentences decided, with counts and the first places. Lines
    are not wrapped at the terminal's width, which would cut a FILE:DOC:OFFSET place in two."""
    out.print(
        f"[bold]{escape(m.name)} {split}[/]: {conv.documents:,} documents, {conv.mentions:,} mentions"
        f" ({escape(str(m.split_file(split)))})",
        soft_wrap=True,
    )
    for cls, n in sorted(conv.ignored.items()):
        out.print(f"  {n:,} mentions of class {escape(cls)} ignored (type_map: {escape(cls)}: null)", soft_wrap=True)
    for what, n, places in conv.decisions.summary():
        first = f": {escape(', '.join(places))}" + (" ..." if n > len(places) else "") if n else ""
        out.print(f"  {n:,} {escape(what)}{first}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.add_typer(datasets_app, name="datasets")
