"""The plain Hugging Face recipes, as a user would write them instead of bioner: the references.

Training: AutoModelForTokenClassification + Trainer + DataCollatorForTokenClassification, labels
on the first sub-token of each word (the HF example's default), truncation at max_length. It is
the reference that our single-task mode (beta = 0) must match in F1 (`bioner fidelity`), and the
peer our training speed is measured against. Prediction: `pipeline("token-classification")` and
`Trainer.predict` over our weights exported as a token classifier.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import TrainConfig
from ..data.job import load_job_data
from ..data.tags import spans
from ..infer.metrics import score
from ..infer.text import split_words
from ..model import load_model, resolve_encoder
from ..train.step import precision_name
from .measure import StepBudget, blocks, peak_rss_mib, summarise, totals

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# Texts in, (type, start, end) character spans per text out: what the prediction benchmark times.
Runner = Callable[[Sequence[str]], list[list[tuple[str, int, int]]]]


def tokenize(
    tok: PreTrainedTokenizerBase,
    tokens: Sequence[Sequence[str]],
    tags: Sequence[Sequence[str]] | None,
    label2id: dict[str, int],
    max_length: int,
) -> tuple[list[dict[str, list[int]]], list[list[int | None]]]:
    """Trainer rows (labels on first pieces, as the HF example) and each row's word ids."""
    enc = tok(tokens, is_split_into_words=True, truncation=True, max_length=max_length)
    labels = []
    for i in range(len(tokens)):
        prev, row = None, []
        for word in enc.word_ids(i):
            row.append(-100 if word is None or word == prev else label2id[tags[i][word]] if tags else 0)
            prev = word
        labels.append(row)
    rows = [
        {"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i], "labels": labels[i]}
        for i in range(len(tokens))
    ]
    return rows, [enc.word_ids(i) for i in range(len(tokens))]


def to_word_tags(
    pred_ids: np.ndarray, enc_word_ids: list[list[int | None]], n_words: list[int], id2label: dict[int, str]
) -> list[list[str]]:
    """Each word's tag: the prediction at its first piece."""
    out = []
    for i, n in enumerate(n_words):
        tags = ["O"] * n  # words cut off by truncation get no prediction: O
        prev = None
        for pos, word in enumerate(enc_word_ids[i]):
            if word is not None and word != prev:
                tags[word] = id2label[int(pred_ids[i][pos])]
            prev = word
        out.append(tags)
    return out


def train_and_score(cfg: TrainConfig, workdir: Path) -> dict[str, float]:
    """Train the HF recipe with cfg's encoder and settings; score cfg.eval_split like bioner does."""
    from transformers import (  # lazy (platform/README.md)
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
    )

    data = load_job_data(cfg.model_copy(update={"beta": 0.0}))
    labels = data.spec.labels
    label2id = {lab: i for i, lab in enumerate(labels)}
    path = resolve_encoder(cfg.encoder)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForTokenClassification.from_pretrained(
        path, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id
    )
    train_rows, _ = tokenize(tok, data.train.tokens, data.train.tags, label2id, cfg.max_length)
    eval_rows, word_ids = tokenize(tok, data.eval.tokens, None, label2id, cfg.max_length)
    args = TrainingArguments(
        output_dir=str(workdir),
        learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        num_train_epochs=cfg.epochs,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a ratio of the total steps
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        seed=cfg.seed,
        save_strategy="no",
        report_to=[],
        logging_steps=50,
        use_cpu=not cfg.use_gpu,
        disable_tqdm=False,
    )
    collator = DataCollatorForTokenClassification(tok)
    trainer = Trainer(model=model, args=args, train_dataset=train_rows, data_collator=collator)
    t0 = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - t0
    pred = trainer.predict(eval_rows)
    ids = np.argmax(pred.predictions, -1)
    tags = to_word_tags(ids, word_ids, [len(t) for t in data.eval.tokens], dict(enumerate(labels)))
    s = score(data.eval.tags, tags, data.spec.types)
    return {f"{data.eval.name}_{k}": v for k, v in s.items()} | {"train_seconds": train_s}


def train_throughput(
    cfg_dict: dict[str, Any], budget: StepBudget, threads: int, workdir: str, bf16: bool = False
) -> dict[str, Any]:
    """In a fresh process: the HF recipe a user would write (with `bf16`: its bf16 autocast), timed by a callback."""
    import torch
    from transformers import (  # lazy (platform/README.md)
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    torch.set_num_threads(threads)
    cfg = TrainConfig(**cfg_dict)
    data = load_job_data(cfg)
    labels = data.spec.labels
    path = resolve_encoder(cfg.encoder)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForTokenClassification.from_pretrained(path, num_labels=len(labels))
    label2id = {lab: i for i, lab in enumerate(labels)}
    rows, _ = tokenize(tok, data.train.tokens, data.train.tags, label2id, cfg.max_length)
    collate = DataCollatorForTokenClassification(tok)
    shapes: list[tuple[int, int, int]] = []

    def counting_collator(features):  # same batches as the plain collator, shapes recorded
        b = collate(features)
        shapes.append((len(features), int(b["attention_mask"].sum()), b["attention_mask"].numel()))
        return b

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t0)

    args = TrainingArguments(
        output_dir=workdir,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        num_train_epochs=1,
        seed=cfg.seed,
        save_strategy="no",
        report_to=[],
        use_cpu=not cfg.use_gpu,
        disable_tqdm=True,
        bf16=bf16,
    )
    Trainer(model=model, args=args, train_dataset=rows, data_collator=counting_collator, callbacks=[Timer()]).train()
    # strict=False: the data loader reads a batch ahead, so the collator may have built one no step ran
    steps = [(*shape, t) for shape, t in zip(shapes, times, strict=False)]
    res = summarise(blocks(steps, budget.skip, budget.steps, budget.repeats))
    return res | totals(steps) | {"peak_memory_mib": peak_rss_mib(), "precision": precision_name(bf16)}


def export_token_classifier(model_dir: Path, out_dir: Path) -> Path:
    """Our model's encoder and NER head as an `AutoModelForTokenClassification` folder (same weights)."""
    from transformers import AutoConfig, AutoModelForTokenClassification  # lazy (platform/README.md)

    model, tok, meta = load_model(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    config.num_labels = len(meta.labels)
    config.id2label = dict(enumerate(meta.labels))
    config.label2id = {lab: i for i, lab in enumerate(meta.labels)}
    hf = AutoModelForTokenClassification.from_config(config)
    prefix = hf.base_model_prefix
    state = {f"{prefix}.{k}": v for k, v in model.encoder.state_dict().items()}
    state |= {"classifier.weight": model.ner_head.weight, "classifier.bias": model.ner_head.bias}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if "pooler" not in m]:
        raise RuntimeError(f"export mismatch: missing {missing}, unexpected {unexpected}")
    hf.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


def spans_of(
    words_per_text: list[list[tuple[str, int, int]]], word_tags: list[list[str]]
) -> list[list[tuple[str, int, int]]]:
    """(type, start, end) character spans per text, from word tags."""
    return [
        [(typ, ws[a][1], ws[b - 1][2]) for typ, a, b in spans(tags)]
        for ws, tags in zip(words_per_text, word_tags, strict=True)
    ]


def pipeline_runner(hf_dir: str) -> Runner:
    from transformers import pipeline  # lazy (platform/README.md)

    pipe = pipeline("token-classification", model=hf_dir, device="cpu")

    def run(xs: Sequence[str]) -> list[list[tuple[str, int, int]]]:
        words, tags = [split_words(x) for x in xs], []
        for ws, toks in zip(words, pipe(list(xs)), strict=True):
            first = {word[1]: i for i, word in enumerate(ws)}
            t = ["O"] * len(ws)
            for tk in toks:  # a word's label is its first piece's (the pipeline leaves out "O" pieces)
                if tk["start"] in first and not tk["word"].startswith("##"):
                    t[first[tk["start"]]] = tk["entity"]
            tags.append(t)
        return spans_of(words, tags)

    return run


def trainer_predict_runner(hf_dir: str, words: list[list[tuple[str, int, int]]], workdir: str) -> tuple[Runner, int]:
    from transformers import (  # lazy (platform/README.md)
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
    )

    tok = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForTokenClassification.from_pretrained(hf_dir)
    args = TrainingArguments(output_dir=workdir, report_to=[], use_cpu=True, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, data_collator=DataCollatorForTokenClassification(tok))
    id2label = model.config.id2label

    def run(xs: Sequence[str]) -> list[list[tuple[str, int, int]]]:
        ws = [split_words(x) for x in xs]
        toks = [[word[0] for word in text_words] for text_words in ws]
        rows, word_ids = tokenize(tok, toks, None, {}, tok.model_max_length if tok.model_max_length < 10**6 else 512)
        pred = trainer.predict(rows)
        tags = to_word_tags(np.argmax(pred.predictions, -1), word_ids, [len(t) for t in toks], id2label)
        return spans_of(ws, tags)

    return run, args.per_device_eval_batch_size
