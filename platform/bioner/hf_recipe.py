"""The plain Hugging Face token-classification recipe, as a user would write it instead of bioner.

AutoModelForTokenClassification + Trainer + DataCollatorForTokenClassification, labels on the
first sub-token of each word (the HF example's default), truncation at max_length. It is the
reference that our single-task mode (beta = 0) must match in F1, and the peer our speed is
measured against.
"""

from __future__ import annotations

import time
from pathlib import Path

from .config import TrainConfig
from .data import load_job_data
from .evaluation import score
from .model import resolve_encoder


def _tokenize(tok, tokens, tags, label2id, max_length):
    """Trainer rows (labels on first pieces, as the HF example) and each row's word ids."""
    enc = tok(tokens, is_split_into_words=True, truncation=True, max_length=max_length)
    labels = []
    for i in range(len(tokens)):
        prev, row = None, []
        for w in enc.word_ids(i):
            row.append(-100 if w is None or w == prev else label2id[tags[i][w]] if tags else 0)
            prev = w
        labels.append(row)
    rows = [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i], "labels": labels[i]} for i in range(len(tokens))]
    return rows, [enc.word_ids(i) for i in range(len(tokens))]


def _to_word_tags(pred_ids, enc_word_ids, n_words, id2label):
    out = []
    for i, n in enumerate(n_words):
        tags = ["O"] * n  # words cut off by truncation get no prediction: O
        prev = None
        for pos, w in enumerate(enc_word_ids[i]):
            if w is not None and w != prev:
                tags[w] = id2label[int(pred_ids[i][pos])]
            prev = w
        out.append(tags)
    return out


def train_and_score(cfg: TrainConfig, workdir: Path) -> dict:
    """Train the HF recipe with cfg's encoder and settings; score cfg.eval_split like bioner does."""
    import numpy as np
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
    )

    data = load_job_data(cfg.model_copy(update={"beta": 0.0}))
    labels = data.spec.labels
    label2id = {l: i for i, l in enumerate(labels)}
    path = resolve_encoder(cfg.encoder)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForTokenClassification.from_pretrained(
        path, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id
    )
    train_rows, _ = _tokenize(tok, data.train.tokens, data.train.tags, label2id, cfg.max_length)
    eval_rows, word_ids = _tokenize(tok, data.eval.tokens, None, label2id, cfg.max_length)
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
    trainer = Trainer(model=model, args=args, train_dataset=train_rows, data_collator=DataCollatorForTokenClassification(tok))
    t0 = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - t0
    pred = trainer.predict(eval_rows)
    ids = np.argmax(pred.predictions, -1)
    tags = _to_word_tags(ids, word_ids, [len(t) for t in data.eval.tokens], dict(enumerate(labels)))
    s = score(data.eval.tags, tags, data.spec.types)
    return {f"{data.eval.name}_{k}": v for k, v in s.items()} | {"train_seconds": train_s}
