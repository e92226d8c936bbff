"""What runs on the cluster: the read stage (a Ray task per shard) and the Tagger actors of the pool.

A row of the read stage is one shard: its documents (as JSON records), checksum and bad records, or why it
stopped. An actor tags the documents (infer.documents.annotate, sentence by sentence), writes the
shard's output whole, then its marker, and hands the driver a small row of figures. A shard that
stopped passes through untouched: nothing of it is written.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict

from ...data.documents import Document
from ...data.formats import open_writer
from ...errors import BionerError
from ...infer.documents import annotate
from ...infer.tagger import Tagger
from .inputs import BadRecord, Shard, read_shard, same_format
from .modelref import unpack
from .output import DOCUMENTS, OutputDir, marker_name, mention_table, mentions_name

# Documents tagged by one annotate() call, as `bioner predict --format` groups them: int8 activations are
# quantised per batch, so the same groups give the same scores as predict. A group's features are what an
# actor holds at a time beyond the shard itself.
GROUP_DOCS, GROUP_CHARS = 64, 500_000
# Figures of a shard that travel from the read stage through the actor to the driver.
FIGURES = ("index", "path", "size", "format", "sha256", "documents", "bad", "fatal", "read_s")


def read_stage(row: dict, max_chars: int, max_errors: int | None) -> dict:
    """One shard read and checked, as one row for the actors."""
    t0 = time.perf_counter()
    shard = Shard(int(row["index"]), row["path"], int(row["size"]), row["format"])
    got = read_shard(shard, max_chars, max_errors)
    return {
        **row,
        "sha256": got.sha256,
        "documents": len(got.documents),
        "fatal": got.fatal or "",
        "bad": json.dumps([asdict(b) for b in got.bad]),
        "docs": json.dumps([d.to_record() for d in got.documents]),
        "read_s": time.perf_counter() - t0,
    }


def groups(docs: list[Document]) -> list[list[Document]]:
    out: list[list[Document]] = [[]]
    size = 0
    for d in docs:
        n = sum(len(p.text) for p in d.passages)
        if out[-1] and (len(out[-1]) >= GROUP_DOCS or size + n > GROUP_CHARS):
            out.append([])
            size = 0
        out[-1].append(d)
        size += n
    return out


class TaggerActor:
    """One Tagger on this worker's CPUs (int8) or GPU (bf16 autocast, fp16 where bf16 is missing)."""

    def __init__(
        self,
        model: list,
        digest: str,
        out: OutputDir,
        output_format: str,
        types: list[str] | None,
        cpus: float,
        gpus: float,
        batch_size: int,
    ):
        import ray  # lazy (platform/README.md)
        import torch  # lazy (platform/README.md)

        _quiet_libraries()

        torch.set_num_threads(max(1, int(cpus)))  # also the int8 session's threads (infer.int8)
        folder = unpack(digest, ray.get(model[0]))  # in a list: Ray passes it on unresolved
        cuda = gpus > 0 and torch.cuda.is_available()
        self.precision = "int8" if not cuda else "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        self.tagger = Tagger.load(
            folder, device="cuda" if cuda else "cpu", batch_size=batch_size, precision="fp32" if cuda else "int8"
        )
        if cuda:
            self.tagger.ner_logits = _autocast(
                self.tagger.ner_logits, torch.bfloat16 if self.precision == "bf16" else torch.float16
            )
        self.types = types
        self.tagger.check_types(types)
        self.sentences = 0
        tag_scored = self.tagger.tag_scored

        def counted(sentences, progress=False):  # annotate() splits; the count of what it split is kept here
            self.sentences += len(sentences)
            return tag_scored(sentences, progress)

        self.tagger.tag_scored = counted
        self.out, self.output_format = out, output_format
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict) -> dict:
        rows = [{k: batch[k][i] for k in batch} for i in range(len(batch["index"]))]
        done = [self.shard(r) for r in rows]
        return {k: [d[k] for d in done] for k in done[0]}

    def shard(self, row: dict) -> dict:
        figures = {k: _plain(row[k]) for k in FIGURES}
        figures.update(
            sentences=0, mentions=0, seconds=0.0, node=self.node, pid=os.getpid(), precision=self.precision, output=""
        )
        if figures["fatal"]:
            return figures
        t0 = time.perf_counter()
        docs = [Document.from_record(r) for r in json.loads(row["docs"])]
        before = self.sentences

        for group in groups(docs):
            if group:
                annotate(self.tagger, group, types=self.types)
        index, path = figures["index"], figures["path"]
        try:
            output = self._write(index, path, figures["format"], str(row["out_name"]), docs)
        except BionerError as e:  # a document its format cannot hold (nothing of the shard was written)
            return {**figures, "fatal": str(e)}
        mentions = sum(len(p.mentions) for d in docs for p in d.passages)
        figures.update(
            sentences=self.sentences - before, mentions=mentions, seconds=time.perf_counter() - t0, output=output
        )
        bad = json.loads(figures["bad"])
        marker = {
            "shard": index,
            "input": path,
            "size": figures["size"],
            "format": figures["format"],
            "sha256": figures["sha256"],
            "documents": figures["documents"],
            "sentences": figures["sentences"],
            "mentions": figures["mentions"],
            "errors": len(bad),
            "bad_records": bad,
            "output": output,
            "seconds": round(figures["seconds"], 3),
            "read_seconds": round(figures["read_s"], 3),
            "node": self.node,
            "pid": os.getpid(),
            "precision": self.precision,
            "finished_at": time.time(),
        }
        self.out.write_json(marker_name(index), marker)  # last: the shard is done once this exists
        return figures

    def _write(self, index: int, path: str, fmt: str, out_name: str, docs: list[Document]) -> str:
        if self.output_format == "parquet":
            import pyarrow.parquet as pq  # lazy (platform/README.md)

            table = mention_table(docs, path)
            self.out.write_with(mentions_name(index), lambda f: pq.write_table(table, f))
            return mentions_name(index)

        out_fmt = same_format(fmt)

        def write(local: str) -> None:
            with open_writer(local, out_fmt) as w:
                for d in docs:
                    w.write(d)

        name = f"{DOCUMENTS}/{out_name}"
        self.out.write_file(name, write, ".gz" if out_name.endswith(".gz") else "")
        return name


def _plain(value):
    """A numpy scalar of a Ray Data batch as the Python value (JSON and Arrow take those)."""
    return value.item() if hasattr(value, "item") else value


def _autocast(fn, dtype):
    import torch  # lazy (platform/README.md)

    def run(batch):
        with torch.autocast("cuda", dtype=dtype):
            return fn(batch)

    return run


def _quiet_libraries() -> None:
    """The loading bars and export warnings of transformers and torch would reach the driver's console."""
    import warnings  # lazy (platform/README.md)

    from transformers.utils import logging as hf_logging  # lazy (platform/README.md)

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=UserWarning, module="torch.onnx")
    warnings.filterwarnings("ignore", category=DeprecationWarning)


__all__ = ["BadRecord", "TaggerActor", "groups", "read_stage"]
