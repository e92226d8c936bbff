"""Throughput benchmarks: bioner against the plain Hugging Face recipe, same data, same machine.

Training: bioner single task and multi-task through the real path (Ray Train, one worker) and
`AutoModelForTokenClassification` + `Trainer` + `DataCollatorForTokenClassification`, all on the
same seeded subset of training sentences, the same encoder, batch size and number of steps.
Prediction: `bioner predict`'s code path (`Tagger.entities`), `pipeline("token-classification")`
with its defaults and `Trainer.predict`, on the same texts and the same weights (our trained or
random-headed model exported as a `BertForTokenClassification`), entities compared.

Each system runs in a fresh process (Ray Train's worker, or a spawned process for the HF
recipes), so the peak resident memory of that process is its own. The first `skip_steps` steps
(or a warm-up pass for prediction) are excluded; figures are medians over `repeats` blocks.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from pydantic import Field

from .config import TrainConfig

VARIANTS = {  # the bioner systems of the training benchmark: config overrides
    "bioner single": {"beta": 0.0, "group_by_length": True},
    "bioner single, random batches": {"beta": 0.0, "group_by_length": False},
    "bioner multi": {"beta": 1.0, "query_source": "annotation", "group_by_length": True},
    "bioner multi, random batches": {"beta": 1.0, "query_source": "annotation", "group_by_length": False},
    # no query: the MRC input is the NER input, one encoder pass serves both heads
    "bioner multi, no query": {"beta": 1.0, "query_source": "none", "group_by_length": True},
}
HF_TRAINER = "HF Trainer recipe"


class BenchConfig(TrainConfig):
    """A training config plus how long to measure. Defaults: the paper's batch and max length."""

    steps: int = Field(5, ge=1, description="measured optimizer steps per repeat (training)")
    skip_steps: int = Field(2, ge=0, description="warm-up steps excluded from the figures (training)")
    repeats: int = Field(3, ge=1, description="blocks measured; figures are medians over blocks")
    sentences: int = Field(940, ge=1, description="texts tagged per repeat (prediction), from eval_split")
    model: str | None = Field(None, description="model to benchmark prediction with (folder or MLflow URI); default: the encoder with a seeded random head")
    systems: list[str] = Field(
        [*VARIANTS, HF_TRAINER], min_length=1, description=f"training systems to run: any of {[*VARIANTS, HF_TRAINER]}"
    )
    out: str = Field("outputs/bench", description="folder for the JSON results")


def machine() -> dict:
    """Where the figures come from; the load average says whether other work shared the cores."""
    import platform

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpus": os.cpu_count(), "gpu": gpu, "torch": torch.__version__, "processor": platform.processor() or platform.machine(),
            "load_average_1m": os.getloadavg()[0]}


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _peak_mem_mib(device) -> float:
    import torch

    if getattr(device, "type", "cpu") == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return _peak_rss_mib()


def totals(steps: list[tuple[int, int, int, float]]) -> dict:
    """Over every step, warm-up included: equal across systems when they saw the same sentences."""
    return {"steps": len(steps), "sentences_all_steps": sum(x[0] for x in steps), "tokens_all_steps": sum(x[1] for x in steps)}


def summarise(blocks: list[dict]) -> dict:
    """Medians over blocks of sentences/s, tokens/s (non-padding tokens) and padding fraction."""
    def med(f):
        return statistics.median(f(b) for b in blocks)

    return {
        "sentences_per_s": med(lambda b: b["sentences"] / b["seconds"]),
        "tokens_per_s": med(lambda b: b["tokens"] / b["seconds"]),
        "padding_fraction": med(lambda b: 1 - b["tokens"] / max(1, b["padded"])),
        "blocks": blocks,
    }


def blocks(steps: list[tuple[int, int, int, float]], skip: int, per_block: int, repeats: int) -> list[dict]:
    """(sentences, tokens, padded tokens, seconds) per step -> `repeats` blocks after `skip` steps."""
    out = []
    for r in range(repeats):
        part = steps[skip + r * per_block : skip + (r + 1) * per_block]
        if part:
            out.append({k: sum(x[i] for x in part) for i, k in enumerate(("sentences", "tokens", "padded", "seconds"))})
    return out


class StepRecorder:
    """Per-step wall time and token counts inside the training loop (bench mode)."""

    def __init__(self, enc, with_ner: bool, with_mrc: bool, bench: dict):
        self.enc, self.with_ner, self.with_mrc, self.bench = enc, with_ner, with_mrc, bench
        self.steps: list[tuple[int, int, int, float]] = []

    @property
    def total(self) -> int:
        return self.bench["skip"] + self.bench["steps"] * self.bench["repeats"]

    def add(self, idx, seconds: float) -> bool:
        """Record one step; True once every measured step is recorded."""
        from .features import mrc_rows

        groups = []
        if self.with_ner:
            groups.append([len(self.enc.ner_ids[i]) for i in idx])
        if self.with_mrc:
            groups.append([len(self.enc.mrc_ids[r]) for r in mrc_rows(self.enc, idx)])
        real = sum(sum(g) for g in groups)
        padded = sum(len(g) * max(g) for g in groups)
        self.steps.append((len(idx), real, padded, seconds))
        return len(self.steps) >= self.total

    def write(self, path: str, device) -> None:
        b = self.bench
        res = summarise(blocks(self.steps, b["skip"], b["steps"], b["repeats"]))
        res |= totals(self.steps) | {"peak_memory_mib": _peak_mem_mib(device)}
        Path(path).write_text(json.dumps(res), encoding="utf-8")


# --------------------------------------------------------------------------- training


def bench_sentences(cfg: BenchConfig) -> int:
    return (cfg.skip_steps + cfg.steps * cfg.repeats) * cfg.batch_size


def _subset_config(cfg: BenchConfig, overrides: dict) -> TrainConfig:
    """The training config every system uses: the same seeded subset of the training split."""
    from .corpora import load_spec, read_split

    n_train = len(read_split(load_spec(cfg.dataset), "train"))
    need = bench_sentences(cfg)
    if need > n_train:
        from .errors import ConfigError

        raise ConfigError(f"steps/skip_steps/repeats: {need} sentences needed, the training split has {n_train}")
    keys = set(TrainConfig.model_fields)
    base = {k: v for k, v in cfg.model_dump().items() if k in keys}
    return TrainConfig(**(base | {"train_splits": ["train"], "eval_split": "devel", "train_fraction": need / n_train, "epochs": 1} | overrides))


def bench_bioner_train(cfg: TrainConfig, bench: dict, workdir: Path) -> dict:
    """Our real training path (Ray Train, one worker), stopped after the measured steps."""
    from .training import fit

    out = workdir / f"bioner-{os.getpid()}-{time.monotonic_ns()}.json"
    result = fit(cfg, None, None, workdir / "ray", out.stem, progress=False, bench=bench | {"out": str(out)})
    if result.error:
        raise result.error
    return json.loads(out.read_text(encoding="utf-8"))


def _hf_train_worker(cfg_dict: dict, bench: dict, threads: int, workdir: str) -> dict:
    """In a fresh process: the HF recipe a user would write, timed by a callback."""
    import torch
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from .data import load_job_data
    from .hf_recipe import _tokenize
    from .model import resolve_encoder

    torch.set_num_threads(threads)
    cfg = TrainConfig(**cfg_dict)
    data = load_job_data(cfg)
    labels = data.spec.labels
    path = resolve_encoder(cfg.encoder)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForTokenClassification.from_pretrained(path, num_labels=len(labels))
    rows, _ = _tokenize(tok, data.train.tokens, data.train.tags, {l: i for i, l in enumerate(labels)}, cfg.max_length)
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
        output_dir=workdir, per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
        num_train_epochs=1, seed=cfg.seed, save_strategy="no", report_to=[], use_cpu=not cfg.use_gpu, disable_tqdm=True,
    )
    Trainer(model=model, args=args, train_dataset=rows, data_collator=counting_collator, callbacks=[Timer()]).train()
    steps = [(*shape, t) for shape, t in zip(shapes, times)]
    res = summarise(blocks(steps, bench["skip"], bench["steps"], bench["repeats"]))
    return res | totals(steps) | {"peak_memory_mib": _peak_rss_mib()}


def _like_a_ray_worker() -> None:
    # Ray lowers its workers' priority by RAY_worker_niceness (15 by default) below the raylet's:
    # the HF recipes run the same, so that other work on the machine slows every system alike.
    os.nice(int(os.environ.get("RAY_worker_niceness", "15")))


def _in_fresh_process(fn, *args):
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn"), initializer=_like_a_ray_worker) as pool:
        return pool.submit(fn, *args).result()


def run_train_bench(cfg: BenchConfig, log=print) -> dict:
    from .training import default_cpus_per_worker, ensure_ray

    unknown = [s for s in cfg.systems if s not in VARIANTS and s != HF_TRAINER]
    if unknown:
        from .errors import ConfigError

        raise ConfigError(f"systems: unknown {unknown}; choose from {[*VARIANTS, HF_TRAINER]}")
    bench = {"skip": cfg.skip_steps, "steps": cfg.steps, "repeats": cfg.repeats}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in cfg.systems:
            log(f"training benchmark: {name} ...")
            if name == HF_TRAINER:
                sub = _subset_config(cfg, {"beta": 0.0})
                ensure_ray()
                threads = max(1, round(default_cpus_per_worker(sub)))
                results[name] = _in_fresh_process(_hf_train_worker, sub.model_dump(), bench, threads, tmp)
            else:
                results[name] = bench_bioner_train(_subset_config(cfg, VARIANTS[name]), bench, Path(tmp))
    return {"kind": "train", "config": cfg.model_dump(), "machine": machine(), "results": results, "ratios": train_ratios(results)}


def _ratio(results, a, b):
    if a in results and b in results:
        return results[a]["sentences_per_s"] / results[b]["sentences_per_s"]
    return None


def train_ratios(results: dict) -> dict:
    out = {
        "bioner single / HF Trainer (sentences/s)": _ratio(results, "bioner single", HF_TRAINER),
        "bioner single, random batches / HF Trainer": _ratio(results, "bioner single, random batches", HF_TRAINER),
        "multi-task epoch / single-task epoch (time)": _ratio(results, "bioner single", "bioner multi"),
        "multi-task / single-task, random batches (time)": _ratio(results, "bioner single, random batches", "bioner multi, random batches"),
        "multi-task, no query / single-task (time)": _ratio(results, "bioner single", "bioner multi, no query"),
    }
    return {k: v for k, v in out.items() if v is not None}


# --------------------------------------------------------------------------- prediction


def export_token_classifier(model_dir: Path, out_dir: Path) -> Path:
    """Our model's encoder and NER head as an `AutoModelForTokenClassification` folder (same weights)."""
    from transformers import AutoConfig, AutoModelForTokenClassification

    from .model import load_model

    model, tok, meta = load_model(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    config.num_labels = len(meta["labels"])
    config.id2label = dict(enumerate(meta["labels"]))
    config.label2id = {l: i for i, l in enumerate(meta["labels"])}
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


def _random_head_model(cfg: BenchConfig, out_dir: Path) -> Path:
    """The encoder with a seeded random head, saved as a bioner model (no trained model needed)."""
    import torch

    from .corpora import load_spec
    from .model import build_model, load_tokenizer, save_model

    spec = load_spec(cfg.dataset)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.encoder, len(spec.labels), cfg.dropout, cfg.trust_remote_code)
    meta = {"labels": spec.labels, "types": spec.types, "dataset": spec.name, "encoder": cfg.encoder,
            "max_length": cfg.max_length, "dropout": cfg.dropout, "multitask": False, "queries": None}
    return save_model(model, load_tokenizer(cfg.encoder, cfg.trust_remote_code), out_dir, meta)


def _timed_blocks(run, texts, repeats: int, tokens: int, padded: int) -> list[dict]:
    run(texts[:32])  # warm-up: first calls allocate and pick kernels
    blocks = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ents = run(texts)
        blocks.append({"sentences": len(texts), "tokens": tokens, "padded": padded, "seconds": time.perf_counter() - t0})
    return blocks, ents


def _spans_of(words_per_text, word_tags) -> list[list[tuple]]:
    from .evaluation import spans

    return [[(typ, ws[a][1], ws[b - 1][2]) for typ, a, b in spans(tags)] for ws, tags in zip(words_per_text, word_tags)]


def _predict_worker(system: str, model_dir: str, hf_dir: str, texts: list[str], repeats: int, batch_size: int, threads: int, workdir: str) -> dict:
    import torch

    from .features import sorted_batches
    from .predict import Tagger, split_words

    torch.set_num_threads(threads)
    words = [split_words(t) for t in texts]
    tagger = Tagger.load(model_dir, batch_size=batch_size)
    lengths = [len(x) for x in tagger._ner_fb.encode([[w[0] for w in ws] for ws in words]).ner_ids]
    tokens = sum(lengths)
    if system == "bioner predict":
        padded = sum(len(b) * max(lengths[i] for i in b) for b in sorted_batches(lengths, batch_size, tagger.max_batch_tokens))

        def run(xs):
            return [[(e["type"], e["start"], e["end"]) for e in es] for es in tagger.entities(xs)]
    elif system == "pipeline":
        run, padded = _pipeline_runner(hf_dir), tokens  # batch size 1: no padding
    else:
        run, bs = _trainer_predict_runner(hf_dir, words, workdir)
        padded = sum(len(lengths[b : b + bs]) * max(lengths[b : b + bs]) for b in range(0, len(lengths), bs))
    blocks, ents = _timed_blocks(run, texts, repeats, tokens, padded)
    return summarise(blocks) | {"peak_memory_mib": _peak_rss_mib(), "entities": ents}


def _pipeline_runner(hf_dir: str):
    from transformers import pipeline

    from .predict import split_words

    pipe = pipeline("token-classification", model=hf_dir, device="cpu")

    def run(xs):
        words, tags = [split_words(x) for x in xs], []
        for ws, toks in zip(words, pipe(list(xs))):
            first = {w[1]: i for i, w in enumerate(ws)}
            t = ["O"] * len(ws)
            for tk in toks:  # a word's label is its first piece's (the pipeline leaves out "O" pieces)
                if tk["start"] in first and not tk["word"].startswith("##"):
                    t[first[tk["start"]]] = tk["entity"]
            tags.append(t)
        return _spans_of(words, tags)

    return run


def _trainer_predict_runner(hf_dir: str, words, workdir: str):
    import numpy as np
    from transformers import AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification, Trainer, TrainingArguments

    from .hf_recipe import _to_word_tags, _tokenize
    from .predict import split_words

    tok = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForTokenClassification.from_pretrained(hf_dir)
    args = TrainingArguments(output_dir=workdir, report_to=[], use_cpu=True, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, data_collator=DataCollatorForTokenClassification(tok))
    id2label = model.config.id2label

    def run(xs):
        ws = [split_words(x) for x in xs]
        toks = [[w[0] for w in w_] for w_ in ws]
        rows, word_ids = _tokenize(tok, toks, None, {}, tok.model_max_length if tok.model_max_length < 10**6 else 512)
        pred = trainer.predict(rows)
        tags = _to_word_tags(np.argmax(pred.predictions, -1), word_ids, [len(t) for t in toks], id2label)
        return _spans_of(ws, tags)

    return run, args.per_device_eval_batch_size


PREDICT_SYSTEMS = ("bioner predict", "pipeline", "Trainer.predict")


def run_predict_bench(cfg: BenchConfig, log=print) -> dict:
    from .corpora import load_spec, read_split
    from .predict import resolve_model

    split = read_split(load_spec(cfg.dataset), cfg.eval_split)
    texts = [" ".join(t) for t in split.tokens[: cfg.sentences]]
    threads = max(1, round(cfg.cpus_per_worker or os.cpu_count() or 1))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = resolve_model(cfg.model) if cfg.model else _random_head_model(cfg, Path(tmp) / "bioner")
        hf_dir = export_token_classifier(Path(model_dir), Path(tmp) / "hf")
        for name in PREDICT_SYSTEMS:
            log(f"prediction benchmark: {name} ...")
            results[name] = _in_fresh_process(
                _predict_worker, name, str(model_dir), str(hf_dir), texts, cfg.repeats, cfg.eval_batch_size, threads, tmp
            )
    ours = results["bioner predict"].pop("entities")
    agreement = {}
    for name in PREDICT_SYSTEMS[1:]:
        theirs = results[name].pop("entities")
        same = sum(sorted(a) == sorted(b) for a, b in zip(ours, theirs))
        agreement[name] = {"texts_identical": same, "texts": len(texts)}
    n_ent = sum(len(e) for e in ours)
    ratios = {f"bioner predict / {n} (sentences/s)": _ratio(results, "bioner predict", n) for n in PREDICT_SYSTEMS[1:]}
    return {"kind": "predict", "config": cfg.model_dump(), "machine": machine(), "model": str(cfg.model or "random head"),
            "entities_found": n_ent, "results": results, "agreement": agreement, "ratios": ratios}


def write_json(report: dict, out_dir: str) -> Path:
    p = Path(out_dir)
    p.mkdir(parents=True, exist_ok=True)
    path = p / f"{report['kind']}.json"
    path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return path


__all__ = ["BenchConfig", "run_train_bench", "run_predict_bench", "write_json", "export_token_classifier"]
