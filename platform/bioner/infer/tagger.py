"""The Tagger: words -> BIO tags, words -> MRC spans, raw text -> entities with character offsets."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import torch
from tqdm.auto import tqdm

from ..data.batching import mrc_batch, mrc_rows, ner_batch, sorted_batches
from ..data.features import Encoded, FeatureBuilder
from ..data.queries import Queries
from ..data.tags import spans, spans_to_tags
from ..errors import BionerError
from ..model import load_model
from .int8 import Int8Ner, resolve_precision
from .metrics import decode_mrc
from .text import split_words


def _progress(total: int, desc: str, enabled: bool):
    return tqdm(total=total, desc=desc, unit="batch", disable=not enabled or total < 2, leave=False)


# Padded positions per inference batch on a CPU. Measured with MiniLM on 2 cores over the 940
# NCBI-disease test sentences (`bioner bench predict`): 1,024 -> 3.6 s, 2,048 -> 3.9 s, only 64
# sentences a batch -> 4.3 s; smaller GEMMs stay in cache and the long first batches pad less.
# On a GPU batches are bounded by `batch_size` only: there larger is faster.
CPU_BATCH_TOKENS = 1024


class Tagger:
    """A trained model ready for inference on one device."""

    def __init__(self, model, tokenizer, meta: dict, device: str | torch.device = "cpu", batch_size: int = 64, ner_logits=None):
        self.model, self.tok, self.meta = model.eval(), tokenizer, meta
        self.ner_logits = ner_logits or model.ner_logits  # the fp32 network, or its int8 graph (infer.int8)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.max_batch_tokens = CPU_BATCH_TOKENS if self.device.type == "cpu" else None
        self.labels: list[str] = meta["labels"]
        self.types: list[str] = meta["types"]
        self.max_length: int = meta["max_length"]
        self._ner_fb = FeatureBuilder(tokenizer, self.labels, self.max_length)
        self.before_batch = None  # called before every forward pass (a server's deadline check raises there)

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "cpu", batch_size: int = 64, precision: str = "fp32") -> "Tagger":
        """A saved model folder ready to tag; `precision` int8 runs the NER forward in int8 (CPU), auto
        is int8 on a CPU and fp32 on a GPU. Training and promotion score fp32, the default here."""
        precision = resolve_precision(precision, torch.device(device))
        model, tok, meta = load_model(model_dir, device)
        int8 = Int8Ner(model, Path(model_dir)) if precision == "int8" else None
        return cls(model, tok, meta, device, batch_size, int8)

    @property
    def has_mrc(self) -> bool:
        return bool(self.meta.get("multitask")) and self.meta.get("queries") is not None

    def _run(self, rows: list[list[int]], make_batch, fn, progress: bool, desc: str) -> list[torch.Tensor]:
        """Length-sorted batched forward passes; returns per-row outputs in input order."""
        out: list = [None] * len(rows)
        batches = sorted_batches([len(r) for r in rows], self.batch_size, self.max_batch_tokens)
        with torch.inference_mode(), _progress(len(batches), desc, progress) as bar:
            for idx in batches:
                if self.before_batch is not None:
                    self.before_batch()
                b = {k: v.to(self.device, non_blocking=True) for k, v in make_batch(idx).items()}
                res = fn(b)
                for j, i in enumerate(idx):
                    out[i] = res[j]
                bar.update(1)
        return out

    def encode(self, sentences: Sequence[Sequence[str]]) -> Encoded:
        """The NER inputs of these sentences (windows of at most max_length pieces)."""
        return self._ner_fb.encode(sentences)

    def tag(self, sentences: Sequence[Sequence[str]], progress: bool = False) -> list[list[str]]:
        """One BIO tag per word for every sentence (long sentences are windowed)."""
        return self.tag_scored(sentences, progress)[0]

    def tag_scored(self, sentences: Sequence[Sequence[str]], progress: bool = False
                   ) -> tuple[list[list[str]], list[list[float]]]:
        """One BIO tag per word, and the model's probability of that tag (at the word's first piece)."""
        enc = self.encode(sentences)
        pad_id = self.tok.pad_token_id

        def best(b):
            p, ids = self.ner_logits(b).float().softmax(-1).max(-1)
            return torch.stack([ids.float(), p], -1).cpu()

        pred = self._run(
            enc.ner_ids,
            lambda idx: {k: v for k, v in ner_batch(enc, idx, pad_id).items() if k != "labels"},
            best,
            progress,
            "tagging",
        )
        tags = [["O"] * len(s) for s in sentences]
        probs = [[1.0] * len(s) for s in sentences]
        for k, sid in enumerate(enc.sentence):
            w = enc.window[k]
            res = pred[k]
            for j in range(w.own_start, w.own_end):
                label, p = res[enc.first_pos[k][j - w.start]].tolist()
                tags[sid][j], probs[sid][j] = self.labels[int(label)], p
        return tags, probs

    def mrc_tags(self, sentences: Sequence[Sequence[str]], progress: bool = False,
                 annotated: Sequence[tuple[str, ...]] | None = None) -> list[list[str]]:
        """BIO tags decoded from the MRC head: one query per type (per type in `annotated[i]` for
        sentence i, when given), spans from start/end probabilities."""
        if not self.has_mrc:
            raise ValueError("this model was trained without the MRC task (beta = 0)")
        queries = Queries.from_dict(self.meta["queries"])
        fb = FeatureBuilder(self.tok, self.labels, self.max_length, queries, self.types)
        if annotated is not None:  # a type the model does not know cannot be asked about
            annotated = [tuple(t for t in a if t in self.types) for a in annotated]
        enc: Encoded = fb.encode(sentences, None, mrc=True, annotated=annotated)
        rows = mrc_rows(enc, range(len(enc)))
        pad_id = self.tok.pad_token_id

        def probs(b):
            s, e = self.model.mrc_logits(b)
            return torch.stack([s.sigmoid(), e.sigmoid()], -1).cpu()

        pred = self._run([enc.mrc_ids[r] for r in rows], lambda idx: mrc_batch(enc, [rows[i] for i in idx], pad_id), probs, progress, "mrc")
        row_pos = {r: i for i, r in enumerate(rows)}
        # word-level start/end probabilities per (sentence, type), from each word's owning window
        word_p: list[dict[int, list[list[float]]]] = [{} for _ in sentences]  # sentence -> type -> [start, end]
        for k, sid in enumerate(enc.sentence):
            w = enc.window[k]
            for r in enc.mrc_of[k]:
                p, off = pred[row_pos[r]], enc.mrc_offset[r]
                buf = word_p[sid].setdefault(enc.mrc_entity_type[r], [[0.0] * len(sentences[sid]), [0.0] * len(sentences[sid])])
                for j in range(w.own_start, w.own_end):
                    pos = enc.first_pos[k][j - w.start] - 1 + off
                    buf[0][j], buf[1][j] = float(p[pos, 0]), float(p[pos, 1])
        out = []
        for sid, s in enumerate(sentences):
            typed = [(self.types[t], a, b) for t, probs in word_p[sid].items() for a, b in decode_mrc(*probs)]
            out.append(spans_to_tags(len(s), sorted(typed, key=lambda x: x[1])))
        return out

    def check_types(self, types: Iterable[str] | None) -> set[str] | None:
        """The types a caller asked for, all known to the model (None: every type)."""
        if types is None:
            return None
        wanted = set(types)
        unknown = sorted(wanted - set(self.types))
        if unknown:
            raise BionerError(f"types {', '.join(unknown)}: not known to this model (it knows {', '.join(self.types)})")
        return wanted

    def entities(self, texts: Iterable[str], progress: bool = False, types: Iterable[str] | None = None) -> list[list[dict]]:
        """Raw text -> [{"text", "start", "end", "type", "score"}] per text; `text[start:end]` is the entity.
        Every type the model knows, or only `types`."""
        wanted = self.check_types(types)
        texts = ["" if t is None else str(t) for t in texts]
        words = [split_words(t) for t in texts]
        non_empty = [i for i, w in enumerate(words) if w]
        tags, probs = self.tag_scored([[w[0] for w in words[i]] for i in non_empty], progress) if non_empty else ([], [])
        out: list[list[dict]] = [[] for _ in texts]
        for i, t, p in zip(non_empty, tags, probs):
            for typ, s, e, score in word_spans(words[i], t, p):
                if wanted is None or typ in wanted:
                    out[i].append({"text": texts[i][s:e], "start": s, "end": e, "type": typ, "score": score})
        return out


def word_spans(words: Sequence[tuple[str, int, int]], tags: Sequence[str], probs: Sequence[float]
               ) -> list[tuple[str, int, int, float]]:
    """(type, start, end, score) of the entities in one sentence's tags, with the words' character offsets;
    the score is the mean probability of the entity's word tags."""
    out = []
    for typ, a, b in spans(tags):
        out.append((typ, words[a][1], words[b - 1][2], round(sum(probs[a:b]) / (b - a), 4)))
    return out
