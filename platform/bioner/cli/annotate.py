"""`bioner annotate`: a model over a corpus of any size on Ray Data, resumable, recorded in MLflow."""

from __future__ import annotations

import typer

from ..studies.annotate import AnnotateOptions, run_annotate
from ..studies.annotate.inputs import INPUT_FORMATS
from .common import MODEL_HELP, TRACKING_HELP, err, out, store_uri

INPUT_HELP = (
    "Documents to tag: a file, a folder (every file below it, hidden ones left out) or a glob ('corpus/*.jsonl.gz', "
    "quoted); a local path or a URI that pyarrow or fsspec reaches (s3://bucket/prefix/). Repeatable. Each file is "
    "one shard: the unit of work, of output and of resume."
)
OUTPUT_HELP = (
    "Folder (a local path or a URI) for mentions/*.parquet, manifest.json, the shards' markers (_shards/) and "
    "errors.jsonl. The same command again with the same --output finishes a job that was stopped. In a job of "
    "`bioner submit`, an absolute path every node sees, or a URI."
)
FORMAT_HELP = (
    f"Format of every input: {', '.join(INPUT_FORMATS)}. Default: per file from its name (.jsonl, .pubtator, "
    ".bioc.xml, .json, .parquet; pubmed*.xml and XML files that start as a PubmedArticleSet are PubMed XML, other "
    ".xml BioC; .gz is read through gzip). Parquet: columns id and text, or id and passages (a list of {offset, "
    "text}). PubMed XML: the PMID, the title at offset 0, the abstract's parts joined by a space after it (as "
    "PubTator)."
)
OUTPUT_FORMAT_HELP = (
    "parquet: mentions/shard-NNNNN.parquet, one row per mention (doc_id, passage, passage_type, start, end, text, "
    "type, score, source_file; offsets into the document). same: instead, documents/<input file name> in the input's "
    "format with the model's mentions (text and Parquet inputs as jsonl, PubMed XML as BioC XML)."
)
MAX_ERRORS_HELP = (
    "Skip bad records (a malformed record, a document over the text limit) and list each in errors.jsonl (file, line, "
    "reason); the job fails (exit 2) only when there are more than N. Default: the first bad record stops the job "
    "with FILE:LINE: reason, and nothing of its shard is written."
)
RESUME_HELP = (
    "Continue the job in --output, which must be there: shards with a marker are kept, the others are "
    "done again from scratch (the same command without --resume resumes as well)."
)
OVERWRITE_HELP = "Replace what another job (another model, inputs, output format or types) left in --output."
ACTORS_HELP = (
    "Tagger actors, each with its own copy of the model (default: as many as the cluster's CPUs, or GPUs, "
    "hold, and no more than the shards to tag)."
)
GPUS_HELP = "GPUs per actor (0: the CPU, int8). On a GPU the model runs in bf16 autocast (fp16 where bf16 is missing)."
ADDRESS_HELP = "A Ray cluster to run on (host:6379, or auto); default $RAY_ADDRESS, else a local Ray on this machine."


def annotate(
    model: str = typer.Option(
        ...,
        "--model",
        help=MODEL_HELP + " A registered alias is pinned to the version it "
        "names when the job starts; a resumed job keeps that version.",
    ),
    input_: list[str] = typer.Option(..., "--input", help=INPUT_HELP),
    output: str = typer.Option(..., "--output", help=OUTPUT_HELP),
    fmt: str | None = typer.Option(None, "--format", help=FORMAT_HELP),
    output_format: str = typer.Option("parquet", "--output-format", help=OUTPUT_FORMAT_HELP),
    resume: bool = typer.Option(False, "--resume", help=RESUME_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    max_errors: int | None = typer.Option(None, "--max-errors", min=0, help=MAX_ERRORS_HELP),
    actors: int | None = typer.Option(None, "--actors", help=ACTORS_HELP),
    min_actors: int | None = typer.Option(None, "--min-actors", help="Lower bound of an autoscaling pool."),
    max_actors: int | None = typer.Option(
        None,
        "--max-actors",
        help="Upper bound of an autoscaling pool (on an autoscaling cluster, nodes are added as the pool grows).",
    ),
    cpus_per_actor: float | None = typer.Option(
        None, "--cpus-per-actor", help="Ray CPUs per actor, also its threads (default 1)."
    ),
    gpus_per_actor: float = typer.Option(0.0, "--gpus-per-actor", help=GPUS_HELP),
    batch_size: int = typer.Option(
        64, "--batch-size", help="Sentences per forward pass (on a CPU batches are also bounded in tokens)."
    ),
    types: str | None = typer.Option(
        None, "--types", help="Comma-separated entity types to keep (default: every type the model knows)."
    ),
    address: str | None = typer.Option(None, "--address", help=ADDRESS_HELP),
    experiment: str = typer.Option("annotate", "--experiment", help="MLflow experiment of the job's run."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Tag every document of a corpus with a model on Ray Data: a pool of Tagger actors, Parquet out, a manifest of
    what was done, an MLflow run (tag bioner.kind=annotate); a stopped job resumes where it was."""
    wanted = [t.strip() for t in types.split(",") if t.strip()] if types is not None else None
    opts = AnnotateOptions(
        model=model,
        inputs=list(input_),
        output=output,
        tracking_uri=store_uri(tracking_uri),
        format=fmt,
        output_format=output_format,
        resume=resume,
        overwrite=overwrite,
        max_errors=max_errors,
        actors=actors,
        min_actors=min_actors,
        max_actors=max_actors,
        cpus_per_actor=cpus_per_actor,
        gpus_per_actor=gpus_per_actor,
        batch_size=batch_size,
        types=wanted,
        address=address,
        experiment=experiment,
        progress=not quiet,
    )
    res = run_annotate(opts, lambda line: err.print(line, markup=False, highlight=False, soft_wrap=True))
    rate = f", {res.documents_per_s:.1f} documents/s" if res.documents_now else ""
    out.print(
        f"{res.documents:,} documents, {res.sentences:,} sentences, {res.mentions:,} mentions, {res.errors:,} "
        f"bad records from {res.shards} file(s) ({res.shards - res.shards_before} this time, "
        f"{res.seconds:.1f} s{rate})",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    out.print(f"output: {res.output}   MLflow run: {res.run_id}", markup=False, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command()(annotate)
