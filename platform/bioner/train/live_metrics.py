"""Live training metrics for Prometheus/Grafana through `ray.util.metrics`.

Each Ray Train worker records its own series (tag `rank`); Ray's metrics agent on the node serves
them to Prometheus with the prefix `ray_` (`bioner_train_loss` -> `ray_bioner_train_loss`).
MLflow keeps the per-epoch history; these are for watching a run while it trains.
Gauges are set at most every `every_s` seconds: a metric call per step would cost time on a CPU.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

TAG_KEYS = ("run_id", "dataset", "rank")
# Names as recorded; Prometheus sees them with Ray's "ray_" prefix (the dashboard JSON queries those).
NAMES = {
    "sentences_per_s": "bioner_sentences_per_second",
    "loss": "bioner_train_loss",
    "loss_ner": "bioner_train_loss_ner",
    "loss_mrc": "bioner_train_loss_mrc",
    "sentences": "bioner_train_sentences",
    "step_seconds": "bioner_step_seconds",
    "epoch": "bioner_epoch",
    "eval_f1": "bioner_eval_f1",
    "memory": "bioner_memory_bytes",
}
STEP_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0]


class LiveMetrics:
    """Per-worker gauges, counter and histogram, fed from the training loop's running sums."""

    def __init__(self, run_id: str, dataset: str, rank: int, device, every_s: float = 2.0):
        from ray.util.metrics import Counter, Gauge, Histogram  # lazy (platform/README.md)

        self.device, self.every_s = device, every_s
        tags = {"run_id": run_id, "dataset": dataset, "rank": str(rank)}

        def gauge(key, desc, extra=()):
            g = Gauge(NAMES[key], description=desc, tag_keys=TAG_KEYS + tuple(extra))
            g.set_default_tags(tags)
            return g

        self.speed = gauge("sentences_per_s", "training sentences per second on this worker (since the last update)")
        self.loss = gauge("loss", "total training loss alpha*NER + beta*MRC (mean of the steps since the last update)")
        self.loss_ner = gauge("loss_ner", "NER (BIO cross-entropy) part of the training loss")
        self.loss_mrc = gauge(
            "loss_mrc", "MRC (start/end BCE) part of the training loss; 0 for the single-task baseline"
        )
        self.epoch_g = gauge("epoch", "epochs finished")
        self.f1 = gauge("eval_f1", "entity F1 on the scored split after each epoch (devel when tuning)", ("split",))
        self.memory = gauge(
            "memory", "worker memory: GPU allocated/peak on a GPU, process RSS on a CPU", ("device", "kind")
        )
        self.sentences = Counter(NAMES["sentences"], description="training sentences processed", tag_keys=TAG_KEYS)
        self.sentences.set_default_tags(tags)
        self.step_time = Histogram(
            NAMES["step_seconds"], description="seconds per optimizer step", boundaries=STEP_BUCKETS, tag_keys=TAG_KEYS
        )
        self.step_time.set_default_tags(tags)
        self._prev_sums, self._prev_n = np.zeros(3), 0
        self._win_sums, self._win_n, self._win_steps = np.zeros(3), 0, 0
        self._t_step = self._t_flush = time.perf_counter()

    def update(self, sums, n_sent: int) -> None:
        """After each step, with the epoch's running loss sums (total, NER, MRC) and the count of
        distinct sentences its windows came from so far (a step of windows of sentences already
        counted adds none)."""
        now = time.perf_counter()
        sums = np.asarray(sums, dtype=float)
        self._win_sums += sums - self._prev_sums
        self._win_n += n_sent - self._prev_n
        self._win_steps += 1
        self.step_time.observe(now - self._t_step)
        self._prev_sums, self._prev_n, self._t_step = sums.copy(), n_sent, now
        if now - self._t_flush >= self.every_s:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        now = now or time.perf_counter()
        if self._win_steps:
            mean = self._win_sums / self._win_steps
            self.loss.set(float(mean[0]))
            self.loss_ner.set(float(mean[1]))
            self.loss_mrc.set(float(mean[2]))
            self.speed.set(self._win_n / max(1e-9, now - self._t_flush))
            self.sentences.inc(self._win_n)
        self._record_memory()
        self._win_sums, self._win_n, self._win_steps, self._t_flush = np.zeros(3), 0, 0, now

    def epoch(self, metrics: dict) -> None:
        """After each epoch: the epoch count, and the eval F1 where this rank scored one."""
        self.flush()
        self._prev_sums, self._prev_n = np.zeros(3), 0  # the next epoch's running sums start again from 0
        self.epoch_g.set(float(metrics.get("epoch", 0)))
        for k, v in metrics.items():
            if k.endswith("_f1") and k.count("_") == 1:
                self.f1.set(float(v), tags={"split": k.split("_")[0]})

    def _record_memory(self) -> None:
        if getattr(self.device, "type", "cpu") == "cuda":
            self.memory.set(
                float(torch.cuda.memory_allocated(self.device)), tags={"device": "cuda", "kind": "allocated"}
            )
            self.memory.set(
                float(torch.cuda.max_memory_allocated(self.device)), tags={"device": "cuda", "kind": "peak"}
            )
        else:
            import psutil  # lazy (platform/README.md)

            self.memory.set(float(psutil.Process(os.getpid()).memory_info().rss), tags={"device": "cpu", "kind": "rss"})
