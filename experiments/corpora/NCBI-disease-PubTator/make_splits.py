"""Split NCBItrainset_corpus.txt (593 abstracts) into train/devel/test PubTator files by document.

The held-out documents are the ones the documents-vs-sentences measurement scores
(experiments/benchmarks/README.md, "Documents against sentences"); their sentences are also in the
IOB NCBI-disease/train.tsv, so a model scored on them must be trained on `train.pubtator` only.
The original file holds PMID 8528200 twice, identical to the character (the IOB train.tsv has it
once); a document ID names one document, so the splits keep its first copy.
Run from the repository root: `python experiments/corpora/NCBI-disease-PubTator/make_splits.py`.
"""

import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED, HELD_OUT = 0, 60  # documents in devel and in test each


def main() -> None:
    blocks = [b for b in (HERE / "NCBItrainset_corpus.txt").read_text(encoding="utf-8").split("\n\n") if b.strip()]
    blocks = list(dict.fromkeys(blocks))  # the one exact duplicate, kept once
    order = list(range(len(blocks)))
    random.Random(SEED).shuffle(order)
    parts = {"test": order[:HELD_OUT], "devel": order[HELD_OUT : 2 * HELD_OUT], "train": order[2 * HELD_OUT :]}
    for name, idx in parts.items():  # documents keep the file's order within a split
        text = "\n\n".join(blocks[i].strip("\n") for i in sorted(idx)) + "\n\n"
        (HERE / f"{name}.pubtator").write_text(text, encoding="utf-8")
        print(f"{name}: {len(idx)} documents")


if __name__ == "__main__":
    main()
