"""`bioner annotate` (Ray Data, its defaults) against single-process `bioner predict --format pubtator` on the
same abstracts, with the same model (the packaged MiniLM encoder, random heads, int8 on the CPU).

The corpus is the NCBI-disease PubTator abstracts (NCBItrainset_corpus.txt) repeated under new IDs until
--docs documents, cut into shards of --per-shard documents (annotate's input) and also written as one
file (predict's input). Both are timed as commands, wall clock from start to exit: the model's load,
and for annotate Ray's start and the actors', included. With --two-nodes annotate also runs on a
`ray start` head and a second node on loopback (--node-cpus each) and the documents tagged on each node
are counted from the shards' markers.

    .venv/bin/python experiments/benchmarks/annotate_throughput.py [--docs 20000] [--per-shard 1000]
        [--rounds 1] [--two-nodes] [--out results/annotate_throughput.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "experiments" / "corpora" / "NCBI-disease-PubTator" / "NCBItrainset_corpus.txt"
BIN = Path(sys.executable).parent


def build_corpus(folder: Path, n_docs: int, per_shard: int) -> tuple[Path, Path]:
    """(the shards' folder, the one-file copy): titles and abstracts only, IDs made unique."""
    blocks = [b for b in SOURCE.read_text(encoding="utf-8").split("\n\n") if b.strip()]
    shards, whole = folder / "shards", folder / "all.pubtator"
    shards.mkdir(parents=True, exist_ok=True)
    docs = []
    for i in range(n_docs):
        title, abstract = blocks[i % len(blocks)].strip("\n").split("\n")[:2]
        new = str(90_000_000 + i)
        docs.append(f"{new}{title[title.index('|') :]}\n{new}{abstract[abstract.index('|') :]}\n")
    for k in range(0, n_docs, per_shard):
        (shards / f"part-{k // per_shard:05d}.pubtator").write_text("\n".join(docs[k : k + per_shard]) + "\n")
    whole.write_text("\n".join(docs) + "\n")
    return shards, whole


def build_model(folder: Path) -> Path:
    """MiniLM (the packaged encoder) with random heads: throughput does not depend on what it learned."""
    if (folder / "bioner.json").is_file():
        return folder
    import torch

    from bioner import model as bm

    torch.manual_seed(0)
    meta = {
        "labels": ["O", "B-Disease", "I-Disease"],
        "types": ["Disease"],
        "dataset": "bench",
        "encoder": "minilm",
        "max_length": 128,
        "dropout": 0.1,
        "multitask": False,
        "queries": None,
    }
    return bm.save_model(bm.build_model("minilm", 3), bm.load_tokenizer("minilm"), folder, meta)


def timed(cmd: list[str], env: dict | None = None, log: Path | None = None) -> float:
    t0 = time.perf_counter()
    with open(log or os.devnull, "wb") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}" + (f"; see {log}" if log else ""))
    return time.perf_counter() - t0


def run_predict(model: Path, whole: Path, work: Path) -> float:
    return timed(
        [
            str(BIN / "bioner"),
            "predict",
            "--model",
            str(model),
            "--input",
            str(whole),
            "--format",
            "pubtator",
            "--output",
            str(work / "predicted.pubtator"),
        ],
        log=work / "predict.log",
    )


def run_annotate(model: Path, shards: Path, work: Path, name: str, extra: list[str], env: dict | None = None) -> dict:
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        str(BIN / "bioner"),
        "annotate",
        "--model",
        str(model),
        "--input",
        str(shards),
        "--output",
        str(out),
        "--tracking-uri",
        f"sqlite:///{work / 'mlflow.db'}",
        "--quiet",
        *extra,
    ]
    seconds = timed(cmd, env=env, log=work / f"{name}.log")
    manifest = json.loads((out / "manifest.json").read_text())
    nodes: dict[str, int] = {}
    for m in manifest["inputs"]:
        nodes[m["node"]] = nodes.get(m["node"], 0) + m["documents"]
    return {
        "seconds": round(seconds, 1),
        "documents": manifest["documents"],
        "mentions": manifest["mentions"],
        "documents_per_s": round(manifest["documents"] / seconds, 2),
        "documents_per_s_per_node": {n[:12]: round(d / seconds, 2) for n, d in nodes.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--per-shard", type=int, default=1_000)
    ap.add_argument("--work", type=Path, default=REPO / ".bench" / "annotate", help="corpus, model and outputs")
    ap.add_argument("--model", type=Path, help="a model folder (default: MiniLM with random heads, built in --work)")
    ap.add_argument("--rounds", type=int, default=1, help="predict then annotate, this many times (best of each)")
    ap.add_argument("--annotate-args", default="", help="more options for bioner annotate (default: its defaults)")
    ap.add_argument("--two-nodes", action="store_true", help="also run annotate on two local Ray nodes")
    ap.add_argument("--node-cpus", type=int, default=1)
    ap.add_argument("--skip-single", action="store_true", help="only the two-node run")
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    shards, whole = build_corpus(args.work / "corpus", args.docs, args.per_shard)
    model = args.model or build_model(args.work / "model")
    extra = args.annotate_args.split()
    figures: dict = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "docs": args.docs,
        "per_shard": args.per_shard,
        "cpus": os.cpu_count(),
        "annotate_args": extra,
        "commit": _commit(),
    }
    if not args.skip_single:
        predict, annotate = [], []
        for r in range(args.rounds):
            predict.append(run_predict(model, whole, args.work))
            print(f"round {r + 1}: predict {predict[-1]:.1f} s ({args.docs / predict[-1]:.2f} documents/s)", flush=True)
            annotate.append(run_annotate(model, shards, args.work, "out", extra))
            print(
                f"round {r + 1}: annotate {annotate[-1]['seconds']:.1f} s "
                f"({annotate[-1]['documents_per_s']:.2f} documents/s)",
                flush=True,
            )
        best_p, best_a = min(predict), min(annotate, key=lambda a: a["seconds"])
        figures.update(
            predict={"seconds": [round(s, 1) for s in predict], "documents_per_s": round(args.docs / best_p, 2)},
            annotate={**best_a, "seconds_all": [a["seconds"] for a in annotate]},
            ratio=round(best_a["documents_per_s"] / (args.docs / best_p), 3),
        )
        print(
            f"predict {figures['predict']['documents_per_s']} documents/s, annotate {best_a['documents_per_s']} "
            f"documents/s: {figures['ratio']}x",
            flush=True,
        )
    if args.two_nodes:
        sys.path.insert(0, str(REPO / "tests"))
        from helpers import two_ray_nodes  # the test suite's launcher: a head and a second node on loopback

        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"RAY_AUTH_MODE": "disabled"}
        with two_ray_nodes(args.work, env, args.node_cpus) as nodes:
            figures["two_nodes"] = run_annotate(
                model, shards, args.work, "out-2nodes", ["--address", nodes.address, *extra], env
            )
        print(
            f"two nodes: {figures['two_nodes']['documents_per_s']} documents/s, per node "
            f"{figures['two_nodes']['documents_per_s_per_node']}",
            flush=True,
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures, indent=1))


def _commit() -> str:
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    return r.stdout.strip() or "unknown"


if __name__ == "__main__":
    main()
