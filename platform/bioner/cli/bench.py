"""`bioner bench train|predict`: throughput against the plain Hugging Face recipe."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..bench.config import BenchConfig
from ..bench.geometry import GEOMETRIES, random_encoder
from ..bench.measure import write_json
from ..bench.predict import run_predict_bench
from ..bench.train import run_train_bench
from .common import load_command_config, out

bench_app = typer.Typer(
    help="Measure throughput against the plain Hugging Face recipe (same data, encoder, batch size, steps).",
    no_args_is_help=True,
)
SET_HELP = "Override a config key: key=value, value parsed as YAML (e.g. --set steps=10). Repeatable."


def _load(config: Path, set_: list[str] | None) -> BenchConfig:
    return load_command_config(BenchConfig, config, set_)


def _table(title: str, results: dict) -> Table:
    t = Table(title=title)
    flops = any("model_tflops" in r for r in results.values())
    mfu = any("mfu" in r for r in results.values())
    prec = any("precision" in r for r in results.values())
    for c in (
        ("system",)
        + ("precision",) * prec
        + ("sentences/s", "tokens/s", "padding", "peak memory (MiB)")
        + ("model TFLOP/s",) * flops
        + ("MFU",) * mfu
    ):
        t.add_column(c, justify="left" if c == "system" else "right")
    for name, r in results.items():
        row = (
            [name]
            + [r.get("precision", "-")] * prec
            + [
                f"{r['sentences_per_s']:.1f}",
                f"{r['tokens_per_s']:.0f}",
                f"{100 * r['padding_fraction']:.1f} %",
                f"{r['peak_memory_mib']:.0f}",
            ]
        )
        row += [f"{r['model_tflops']:.3f}" if "model_tflops" in r else "-"] * flops + [
            f"{100 * r['mfu']:.1f} %" if "mfu" in r else "-"
        ] * mfu
        t.add_row(*row)
    return t


def _print_ratios(ratios: dict, machine: dict) -> None:
    load = machine["load_average_1m"]
    out.print(
        f"{machine['cpus']} CPUs, GPU: {machine['gpu'] or 'none'}, load average {load:.1f} at the end"
        + (" [yellow](other work shared the machine: figures are distorted)[/]" if load > machine["cpus"] + 0.5 else "")
    )
    for k, v in ratios.items():
        out.print(f"{k}: [bold]{v:.2f}x[/]")


@bench_app.command("train")
def bench_train(
    config: Path = typer.Argument(
        ..., help="YAML bench config (training keys plus steps, skip_steps, repeats, systems)."
    ),
    set_: list[str] | None = typer.Option(None, "--set", help=SET_HELP),
):
    """Training throughput: bioner single/multi-task (Ray Train, 1 worker) against AutoModelForTokenClassification + Trainer.

    Every system trains on the same seeded subset of the training split; the first skip_steps steps are
    excluded; figures are medians over `repeats` blocks of `steps` steps. Writes <out>/train.json.
    """  # noqa: E501 - typer prints this docstring's line breaks as they are in `bioner --help`
    cfg = _load(config, set_)
    rep = run_train_bench(cfg, log=lambda m: out.print(f"[dim]{m}[/]"))
    out.print(
        _table(
            f"training, {cfg.dataset}, {cfg.encoder}, batch {cfg.batch_size}, max length {cfg.max_length}",
            rep["results"],
        )
    )
    _print_ratios(rep["ratios"], rep["machine"])
    out.print(f"written: {write_json(rep, cfg.out)}")


@bench_app.command("predict")
def bench_predict(
    config: Path = typer.Argument(
        ..., help="YAML bench config (dataset, encoder or model, eval_batch_size, sentences, repeats)."
    ),
    set_: list[str] | None = typer.Option(None, "--set", help=SET_HELP),
):
    """Prediction throughput: `bioner predict`'s path against pipeline("token-classification") and Trainer.predict.

    All three use the same weights (the model is exported as an AutoModelForTokenClassification) and the
    same texts (the first `sentences` of eval_split); the entities they find are compared. Writes <out>/predict.json.
    """
    cfg = _load(config, set_)
    rep = run_predict_bench(cfg, log=lambda m: out.print(f"[dim]{m}[/]"))
    out.print(
        _table(
            f"prediction, {cfg.sentences} texts of {cfg.dataset} {cfg.eval_split}, model: {rep['model']}",
            rep["results"],
        )
    )
    _print_ratios(rep["ratios"], rep["machine"])
    for name, a in rep["agreement"].items():
        out.print(
            f"same entities as {name}: {a['texts_identical']}/{a['texts']} texts ({rep['entities_found']} entities "
            "from bioner)"
        )
    out.print(f"written: {write_json(rep, cfg.out)}")


@bench_app.command("random-encoder")
def bench_random_encoder(
    out_dir: Path = typer.Argument(..., help="Folder to write (config.json, model.safetensors, tokenizer files)."),
    geometry: str = typer.Option("bert-base", help=f"Encoder size: {', '.join(GEOMETRIES)}."),
    seed: int = typer.Option(0, help="Initialisation seed."),
):
    """A randomly initialised BERT encoder of a standard geometry (MiniLM's uncased vocabulary), for
    measuring GPU throughput and MFU where no weights can be downloaded: --set encoder=OUT_DIR."""
    path = random_encoder(out_dir, geometry, seed)
    out.print(
        f"written: {path} ({geometry}); e.g. bioner bench train experiments/benchmarks/gpu.yaml --set encoder={path}"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
