"""`bioner evaluate`, `predict`, `promote` and `runs compare`: using and judging trained models."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from ..config import SPLITS
from ..data.iob import read_split, scan_split
from ..data.specs import load_spec
from ..errors import BionerError
from ..infer.evaluate import corpus_counts, evaluate_split, flat_metrics, scores_report, write_predictions
from ..infer.int8 import PRECISIONS
from ..infer.tagger import Tagger
from ..infer.text import MAX_TEXT_CHARS_ENV, check_length, check_text, max_text_chars
from ..model import read_meta
from ..studies.tags import KIND, RUN_NAME, STOP_REASON, Kind
from ..tracking.models import resolve_model
from ..tracking.registry import model_name
from ..tracking.registry import promote as do_promote
from ..tracking.store import open_store
from .common import MODEL_HELP, PRECISION_HELP, TRACKING_HELP, err, out, print_scores, store_uri
from .documents import FORMAT_HELP, check_output, count_documents, document_format, is_regular, predict_documents
from .text_input import chunks, open_input

runs_app = typer.Typer(help="Look at MLflow runs.", no_args_is_help=True)


def evaluate(
    model: str = typer.Option(..., "--model", help=MODEL_HELP),
    dataset: str = typer.Option(..., "--dataset", help="Dataset name or spec path."),
    split: str = typer.Option("test", "--split", help="Split to score: train, devel or test."),
    predictions: Path | None = typer.Option(None, "--predictions", help="Write token/gold/predicted TSV here."),
    batch_size: int = typer.Option(64, help="Sentences per inference batch."),
    precision: str = typer.Option(
        "fp32", "--precision", help=PRECISION_HELP + " Default fp32: the model as trained and logged."
    ),
    as_json: bool = typer.Option(
        False,
        "--json",
        help='Print the scores as one JSON object for scripts: {"precision", "recall", '
        '"f1", "per_type": {TYPE: {"precision", "recall", "f1", "tp", "fp", "fn"}}, "per_corpus": {...}}, '
        "fractions in 0..1.",
    ),
):
    """Score a model on a dataset split: entity-level P/R/F1, per type (and per corpus for a composite), MRC F1 (fp32).

    An IOB corpus is scored by strict IOB2 spans per sentence (as seqeval); a corpus of documents by exact
    character span and type per document (as the BioCreative evaluators). Any dataset works, also one the
    model was not trained on (cross-corpus): each corpus is scored on the types it annotates; predictions of
    other types are ignored there."""
    if split not in SPLITS:
        raise BionerError(f"--split {split!r}: expected train, devel or test")
    check_arguments(batch_size, precision)
    spec = load_spec(dataset)
    documents = any(m.documents for m in spec.members)
    if documents and predictions:
        raise BionerError(
            "--predictions writes IOB sentences; for documents use bioner predict --format ... --output FILE"
        )
    data = None if documents or as_json else read_split(spec, split)  # checks the files before the model loads
    if data is None:
        for m in spec.members:
            if m.has_split(split):
                scan_split(m, split)
    folder = resolve_model(model)
    known = read_meta(folder).types  # the model's types without loading it
    unknown = [t for t in spec.types if t not in known]
    if not set(spec.types) & set(known):
        raise BionerError(
            f"--dataset {dataset}: none of its types ({', '.join(spec.types)}) is known to the model "
            f"({', '.join(known)})"
        )
    tagger = Tagger.load(folder, batch_size=batch_size, precision=precision)
    if data is None:
        report = scores_report(corpus_counts(tagger, spec, split, progress=not as_json))
        if as_json:
            sys.stdout.write(json.dumps(report) + "\n")
            return
        print_scores(flat_metrics(report, split))
        if unknown:
            out.print(f"types of {spec.name} the model does not know (scored, never predicted): {', '.join(unknown)}")
        return
    metrics, pred = evaluate_split(tagger, data, spec.types, with_mrc=True)
    print_scores(metrics)
    if unknown:  # a cross-corpus evaluation: the model cannot find what it was never taught
        out.print(f"types of {spec.name} the model does not know (scored, never predicted): {', '.join(unknown)}")
    if predictions:
        write_predictions(predictions, data, pred)
        out.print(f"predictions: {predictions}")


def predict(
    text: list[str] | None = typer.Argument(None, help="Texts to tag (each one argument)."),
    model: str = typer.Option(..., "--model", help=MODEL_HELP),
    input_: Path | None = typer.Option(
        None,
        "--input",
        help="One text per line (lines end at \\n or \\r\\n only): a file, a pipe, a device, or '-' for stdin. "
        f"Streamed: output follows in groups of texts, in bounded memory; at most ${MAX_TEXT_CHARS_ENV} characters "
        "per line.",
    ),
    batch_size: int = typer.Option(64, help="Texts per inference batch."),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
    types: str | None = typer.Option(
        None, "--types", help="Comma-separated entity types to return (default: every type the model knows)."
    ),
    fmt: str | None = typer.Option(None, "--format", help=FORMAT_HELP),
    output: Path | None = typer.Option(
        None,
        "--output",
        help="With documents: the file (a folder for brat) to write them to, "
        "with the model's mentions; default stdout.",
    ),
    keep: bool = typer.Option(
        False,
        "--keep-annotations",
        help="With documents: keep the mentions they already have beside the model's (default: replace them).",
    ),
):
    """Tag raw text: one JSON line per text, {"text", "entities": [{"text", "start", "end", "type", "score"}]}; or documents
    (--format, or an --input whose extension names one) written back in their format with the model's mentions."""  # noqa: E501 - typer prints this docstring's line breaks as they are in `bioner --help`
    limit = max_text_chars()
    check_arguments(batch_size, precision)
    wanted = wanted_types(types)
    doc_fmt = document_format(input_, fmt)
    if doc_fmt is not None:
        return _predict_documents(model, input_, doc_fmt, output, keep, text, batch_size, precision, wanted, limit)
    if output is not None or keep:
        raise BionerError("--output and --keep-annotations go with documents (--format)")
    # Undecodable bytes in an argument arrive as lone surrogates, which cannot be written out.
    texts = [
        check_length(check_text(t, f"TEXT argument {i}"), f"TEXT argument {i}", limit)
        for i, t in enumerate(text or [], 1)
    ]
    lines, empty = open_input(input_, limit) if input_ is not None else (iter(()), None)
    if not texts and (input_ is None or empty):
        raise BionerError(
            f"nothing to tag: --input {input_} is {empty}"
            if input_ is not None
            else "nothing to tag: give TEXT arguments or --input FILE"
        )
    tagger = Tagger.load(model_folder(model, wanted), batch_size=batch_size, precision=precision)
    for group in chunks(itertools.chain(texts, lines)):
        for t, ents in zip(group, tagger.entities(group, types=wanted), strict=True):
            sys.stdout.write(json_line({"text": t, "entities": ents}))
        sys.stdout.flush()


def _predict_documents(model, input_, fmt, output, keep, text, batch_size, precision, wanted, limit) -> None:
    if text:
        raise BionerError("give either TEXT arguments or documents (--input with --format), not both")
    check_output(output, fmt)
    total = count_documents(input_, fmt, limit) if is_regular(input_) else None
    tagger = Tagger.load(model_folder(model, wanted), batch_size=batch_size, precision=precision)
    n = predict_documents(tagger, input_, fmt, output, wanted, keep, limit, total)
    if output is not None:
        err.print(f"{n:,} documents tagged: {output}", markup=False, highlight=False)


def check_arguments(batch_size: int, precision: str) -> None:
    """The options that need no model, checked before one loads (building an int8 model is slow)."""
    if batch_size < 1:
        raise BionerError(f"--batch-size {batch_size}: at least 1")
    if precision not in PRECISIONS:
        raise BionerError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")


def wanted_types(types: str | None) -> list[str] | None:
    """--types as a list (None: every type the model knows); naming no type is a mistake, not an empty answer."""
    if types is None:
        return None
    wanted = [t.strip() for t in types.split(",") if t.strip()]
    if not wanted:
        raise BionerError(
            f"--types {types!r}: names no type; give comma-separated types (e.g. --types Disease), "
            "or leave --types out for every type"
        )
    return wanted


def model_folder(model: str, wanted: list[str] | None) -> Path:
    """--model as a local folder, with --types checked against the types in its bioner.json, before the model loads."""
    folder = resolve_model(model)
    if wanted is not None:
        known = read_meta(folder).types
        unknown = sorted(set(wanted) - set(known))
        if unknown:
            raise BionerError(f"--types {', '.join(unknown)}: not known to this model (it knows {', '.join(known)})")
    return folder


# Characters that JSON leaves as they are but that line splitters (Python's str.splitlines, some JSON
# Lines readers) take for line ends: escaped, one record stays one line.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def json_line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False).translate(_LINE_BREAKS) + "\n"


def promote(
    dataset: str = typer.Option(
        ...,
        "--dataset",
        help="Dataset name or spec path: the registered model is bioner-<name>, "
        "scored on this spec's test split, which must be the corpus it was registered with.",
    ),
    threshold: float = typer.Option(
        0.05, help="Largest p-value of the paired bootstrap that allows promotion, in (0, 1)."
    ),
    resamples: int = typer.Option(1000, min=1000, help="Bootstrap resamples over test sentences (>= 1000)."),
    seed: int = typer.Option(0, help="Bootstrap seed."),
    force: bool = typer.Option(False, "--force", help="Promote whatever the test says (needs --reason)."),
    reason: str | None = typer.Option(None, "--reason", help="Why --force was used; recorded on the model version."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
):
    """Move alias `champion` to `challenger` only if it is better on test with paired-bootstrap p <= threshold."""
    if not 0 < threshold < 1:  # nan fails this too
        raise BionerError(f"--threshold {threshold}: a p-value threshold is between 0 and 1 (exclusive), e.g. 0.05")
    if force and not (reason or "").strip():
        raise BionerError("--force needs --reason TEXT that says why (it is recorded on the model version)")
    uri = store_uri(tracking_uri)
    spec = load_spec(dataset)
    d = do_promote(spec, threshold, resamples, seed, force, reason, uri)
    verdict = "[green]promoted[/]" if d.promoted and d.changed else "unchanged" if d.promoted else "[yellow]refused[/]"
    out.print(
        f"{verdict}: {model_name(spec.name)} version {d.challenger_version} -> champion? {d.promoted}. {d.reason}"
    )
    if not d.promoted:
        raise typer.Exit(1)


@runs_app.command("compare")
def runs_compare(
    experiment: str = typer.Option(..., "--experiment", help="MLflow experiment name."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
    limit: int = typer.Option(50, help="Rows to show."),
):
    """Tuning trials as a table sorted by devel F1 (the MLflow UI shows the same runs)."""
    import mlflow  # lazy (platform/README.md)

    uri = store_uri(tracking_uri)
    open_store(uri, create=False)
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        raise BionerError(f"--experiment {experiment}: no such experiment in {uri}")
    df = mlflow.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{KIND}` = '{Kind.TRIAL}'",
        order_by=["metrics.devel_f1 DESC"],
        max_results=limit,
    )
    if df.empty:
        raise BionerError(f"--experiment {experiment}: no tuning trials found")
    names = [str(r.get(f"tags.{RUN_NAME}", r["run_id"])) for _, r in df.iterrows()]
    t = Table(title=f"trials of {experiment}, best first")
    # A run name is copied whole into other commands: never cut or folded.
    t.add_column("run", no_wrap=True, min_width=max(len(n) for n in names))
    for c in ("devel F1", "alpha", "beta", "learning_rate", "query_source", "status", "stop reason"):
        t.add_column(c)
    for name, (_, r) in zip(names, df.iterrows(), strict=True):
        f1 = r.get("metrics.devel_f1")
        t.add_row(
            name,
            "-" if f1 is None or f1 != f1 else f"{f1:.4f}",
            f"{float(r['params.alpha']):.3f}",
            f"{float(r['params.beta']):.3f}",
            f"{float(r['params.learning_rate']):.2e}",
            str(r["params.query_source"]),
            str(r["status"]),
            str(r.get(f"tags.{STOP_REASON}") or ""),
        )
    # A terminal too narrow for the table gets it at its natural width, not cut: its soft wrap keeps a long run name
    # one piece to copy, where an ellipsis or a fold would not. Console.print cannot widen; a console of that width can.
    fit = Measurement.get(out, out.options.update(width=100_000), t)
    wide = (
        out
        if fit.minimum <= out.width
        else Console(file=out.file, width=fit.maximum, color_system=out.color_system, force_terminal=out.is_terminal)
    )
    wide.print(t)


def register(app: typer.Typer) -> None:
    app.command()(evaluate)
    app.command()(predict)
    app.command()(promote)
    app.add_typer(runs_app, name="runs")
