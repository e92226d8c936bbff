"""`bioner predict --format pubtator` against today's one-text-per-line path, on the same abstracts.

The text path is what a user without documents support does: each abstract's title + " " +
abstract as one line of `--input`, tagged as one text (windowed at max_length). The documents
path reads the PubTator file, checks it whole, splits every passage into sentences and writes the
documents back with their mentions. Both are run as the `bioner` command, best of `--repeats`, with
the same model and precision; the wall time includes the model's load, the same for both.

    PYTHONPATH=platform .venv/bin/python experiments/benchmarks/documents_predict.py --model M [--copies N] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bioner.data.formats import open_writer, read_documents

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "experiments" / "corpora" / "NCBI-disease-PubTator" / "train.pubtator"


def corpus(folder: Path, copies: int) -> tuple[Path, Path, int]:
    """The abstracts `copies` times under new IDs, as PubTator and as one text per line."""
    docs = list(read_documents(SOURCE, "pubtator"))
    pub, txt = folder / "docs.pubtator", folder / "docs.txt"
    with open_writer(pub, "pubtator") as w, open(txt, "w", encoding="utf-8") as t:
        for k in range(copies):
            for d in docs:
                d2 = d.without_mentions()
                d2.id = f"{d.id}{k:03d}"
                w.write(d2)
                t.write(" ".join(p.text for p in d.passages) + "\n")
    return pub, txt, copies * len(docs)


def timed(cmd: list[str], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a model folder")
    ap.add_argument("--copies", type=int, default=2, help="times the 472 abstracts are repeated")
    ap.add_argument("--precision", default="auto", help="as bioner predict (auto: int8 on a CPU)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args()
    bioner = shutil.which("bioner") or str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "bioner")
    with tempfile.TemporaryDirectory() as tmp:
        pub, txt, n = corpus(Path(tmp), args.copies)
        common = [bioner, "predict", "--model", args.model, "--precision", args.precision]
        text_s = timed(common + ["--input", str(txt)], args.repeats)
        docs_s = timed(
            common + ["--input", str(pub), "--format", "pubtator", "--output", str(Path(tmp) / "out.pubtator")],
            args.repeats,
        )
    result = {
        "documents": n,
        "text_lines_s": text_s,
        "documents_s": docs_s,
        "text_lines_docs_per_s": n / text_s,
        "documents_docs_per_s": n / docs_s,
        "ratio": text_s / docs_s,
    }
    print(
        f"{n} abstracts: one text per line {text_s:.1f} s ({n / text_s:.1f} docs/s); "
        f"--format pubtator {docs_s:.1f} s ({n / docs_s:.1f} docs/s); documents / text = {text_s / docs_s:.2f}x"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
