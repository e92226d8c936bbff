"""The Tagger: words -> BIO tags, words -> MRC spans, raw text -> entities with character offsets."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast

import torch
from tqdm.auto import tqdm

from ..data.batch_types import EncoderInputs, MrcBatch, NerBatch
from ..data.batching import mrc_batch, mrc_rows, ner_batch, sorted_batches
from ..data.features import Encoded, FeatureBuilder
from ..data.queries import Queries
from ..data.tags import spans, spans_to_tags
from ..errors import BionerError
from ..model import BioNERModel, ModelMeta, load_model
from .int8 import Int8Ner, resolve_precision
from .metrics import decode_mrc
from .text import split_words

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Inputs = TypeVar("Inputs", bound=EncoderInputs)


def _progress(total: int, desc: str, enabled: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit="batch", disable=not enabled or total < 2, leave=False)


# Padded positions per inference batch on a CPU: smaller products stay in cache and the long first
# batches pad less (experiments/benchmarks/README.md, "What was tried, what was kept"). On a GPU
# batches are bounded by `batch_size` only: there larger is faster.
CPU_BATCH_TOKENS = 1024


class Tagger:
    """A trained model ready for inference on one device."""

    def __init__(
        self,
        model: BioNERModel,
        tokenizer: PreTrainedTokenizerBase,
        meta: ModelMeta,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        ner_logits: Callable[[EncoderInputs], torch.Tensor] | None = None,
    ):
        self.model, self.tok, self.meta = model.eval(), tokenizer, meta
        self.ner_logits = ner_logits or model.ner_logits  # the fp32 network, or its int8 graph (infer.int8)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.max_batch_tokens = CPU_BATCH_TOKENS if self.device.type == "cpu" else None
        self.labels: list[str] = meta.labels
        self.types: list[str] = meta.types
        self.max_length: int = meta.max_length
        self._ner_fb = FeatureBuilder(tokenizer, self.labels, self.max_length)
        # called before every forward pass (a server's deadline check raises there)
        self.before_batch: Callable[[], None] | None = None

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "cpu", batch_size: int = 64, precision: str = "fp32") -> Tagger:
        """A saved model folder ready to tag; `precision` int8 runs the NER forward in int8 (CPU), auto
        is int8 on a CPU and fp32 on a GPU. Training and promotion score fp32, the default here."""
        precision = resolve_precision(precision, torch.device(device))
        model, tok, meta = load_model(model_dir, device)
        int8 = Int8Ner(model, Path(model_dir)) if precision == "int8" else None
        return cls(model, tok, meta, device, batch_size, int8)

    @property
    def has_mrc(self) -> bool:
        return bool(self.meta.multitask) and self.meta.queries is not None

    def _run(
        self,
        lengths: list[int],
        make_batch: Callable[[list[int]], Inputs],
        fn: Callable[[Inputs], torch.Tensor],
        progress: bool,
        desc: str,
    ) -> list[torch.Tensor]:
        """Length-sorted batched forward passes over rows of these `lengths` (`make_batch(row ids)`);
        returns per-row outputs in input order."""
        out: list = [None] * len(lengths)
        batches = sorted_batches(lengths, self.batch_size, self.max_batch_tokens)
        with torch.inference_mode(), _progress(len(batches), desc, progress) as bar:
            for row_ids in batches:
                if self.before_batch is not None:
                    self.before_batch()
                batch = make_batch(row_ids)
                res = fn(cast(Inputs, {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}))
                for j, i in enumerate(row_ids):
                    out[i] = res[j]
                bar.update(1)
        return out

    def encode(self, sentences: Sequence[Sequence[str]]) -> Encoded:
        """The NER inputs of these sentences (windows of at most max_length pieces)."""
        return self._ner_fb.encode(sentences)

    def tag(self, sentences: Sequence[Sequence[str]], progress: bool = False) -> list[list[str]]:
        """One BIO tag per word for every sentence (long sentences are windowed)."""
        return self.tag_scored(sentences, progress)[0]

    def tag_scored(
        self, sentences: Sequence[Sequence[str]], progress: bool = False
    ) -> tuple[list[list[str]], list[list[float]]]:
        """One BIO tag per word, and the model's probability of that tag (at the word's first piece)."""
        enc = self.encode(sentences)
        pad_id = self.tok.pad_token_id

        def inputs(window_ids: list[int]) -> NerBatch:
            batch = ner_batch(enc, window_ids, pad_id)
            del batch["labels"]  # no labels at inference
            return batch

        def best(b: NerBatch) -> torch.Tensor:
            p, ids = self.ner_logits(b).float().softmax(-1).max(-1)
            return torch.stack([ids.float(), p], -1).cpu()

        pred = self._run([len(window.input_ids) for window in enc.windows], inputs, best, progress, "tagging")
        tags = [["O"] * len(s) for s in sentences]
        probs = [[1.0] * len(s) for s in sentences]
        for window, res in zip(enc.windows, pred, strict=True):
            sid, span = window.sentence, window.span
            for j in range(span.own_start, span.own_end):
                label, p = res[window.first_pos[j - span.start]].tolist()
                tags[sid][j], probs[sid][j] = self.labels[int(label)], p
        return tags, probs

    def mrc_tags(
        self,
        sentences: Sequence[Sequence[str]],
        progress: bool = False,
        annotated: Sequence[tuple[str, ...]] | None = None,
    ) -> list[list[str]]:
        """BIO tags decoded from the MRC head: one query per type (per type in `annotated[i]` for
        sentence i, when given), spans from start/end probabilities."""
        if not self.has_mrc:
            raise ValueError("this model was trained without the MRC task (beta = 0)")
        queries = Queries.from_dict(self.meta.queries)
        fb = FeatureBuilder(self.tok, self.labels, self.max_length, queries, self.types)
        if annotated is not None:  # a type the model does not know cannot be asked about
            annotated = [tuple(t for t in a if t in self.types) for a in annotated]
        enc: Encoded = fb.encode(sentences, None, mrc=True, annotated=annotated)
        rows = mrc_rows(enc, range(len(enc)))
        pad_id = self.tok.pad_token_id

        def probs(b: MrcBatch) -> torch.Tensor:
            s, e = self.model.mrc_logits(b)
            return torch.stack([s.sigmoid(), e.sigmoid()], -1).cpu()

        pred = self._run(
            [len(enc.mrc[r].input_ids) for r in rows],
            lambda row_ids: mrc_batch(enc, [rows[i] for i in row_ids], pad_id),
            probs,
            progress,
            "mrc",
        )
        row_pos = {r: i for i, r in enumerate(rows)}
        # word-level start/end probabilities per (sentence, type), from each word's owning window
        word_p: list[dict[int, list[list[float]]]] = [{} for _ in sentences]  # sentence -> type -> [start, end]
        for window in enc.windows:
            sid, span = window.sentence, window.span
            for r in window.mrc_rows:
                row, p = enc.mrc[r], pred[row_pos[r]]
                n_words = len(sentences[sid])
                buf = word_p[sid].setdefault(row.entity_type, [[0.0] * n_words, [0.0] * n_words])
                for j in range(span.own_start, span.own_end):
                    pos = window.first_pos[j - span.start] - 1 + row.offset
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

    def entities(
        self, texts: Iterable[str], progress: bool = False, types: Iterable[str] | None = None
    ) -> list[list[dict]]:
        """Raw text -> [{"text", "start", "end", "type", "score"}] per text; `text[start:end]` is the entity.
        Every type the model knows, or only `types`."""
        wanted = self.check_types(types)
        texts = ["" if t is None else str(t) for t in texts]
        words = [split_words(t) for t in texts]
        non_empty = [i for i, ws in enumerate(words) if ws]
        sentences = [[word[0] for word in words[i]] for i in non_empty]
        tags, probs = self.tag_scored(sentences, progress) if non_empty else ([], [])
        out: list[list[dict]] = [[] for _ in texts]
        for i, t, p in zip(non_empty, tags, probs, strict=True):
            for typ, s, e, score in word_spans(words[i], t, p):
                if wanted is None or typ in wanted:
                    out[i].append({"text": texts[i][s:e], "start": s, "end": e, "type": typ, "score": score})
        return out


def word_spans(
    words: Sequence[tuple[str, int, int]], tags: Sequence[str], probs: Sequence[float]
) -> list[tuple[str, int, int, float]]:
    """(type, start, end, score) of the entities in one sentence's tags, with the words' character offsets;
    the score is the mean probability of the entity's word tags."""
    out = []
    for typ, a, b in spans(tags):
        out.append((typ, words[a][1], words[b - 1][2], round(sum(probs[a:b]) / (b - a), 4)))
    return out
