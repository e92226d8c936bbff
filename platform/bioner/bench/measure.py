"""How figures are measured: per-step records, medians over blocks, peak memory, the machine.

Each system runs in a fresh process (Ray Train's worker, or a spawned process for the HF
recipes), so the peak resident memory of that process is its own. The first `skip` steps (or a
warm-up pass for prediction) are excluded; figures are medians over `repeats` blocks.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import torch


@dataclass(frozen=True)
class StepBudget:
    """Steps a training benchmark runs: `skip` warm-up steps, then `repeats` blocks of `steps`."""

    skip: int
    steps: int
    repeats: int

    @property
    def total(self) -> int:
        return self.skip + self.steps * self.repeats


def machine() -> dict:
    """Where the figures come from; the load average says whether other work shared the cores."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpus": os.cpu_count(),
        "gpu": gpu,
        "torch": torch.__version__,
        "processor": platform.processor() or platform.machine(),
        "load_average_1m": os.getloadavg()[0],
    }


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def peak_mem_mib(device) -> float:
    if getattr(device, "type", "cpu") == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mib()


def totals(steps: list[tuple[int, int, int, float]]) -> dict:
    """Over every step, warm-up included: equal across systems when they saw the same sentences."""
    return {
        "steps": len(steps),
        "sentences_all_steps": sum(x[0] for x in steps),
        "tokens_all_steps": sum(x[1] for x in steps),
    }


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

    def __init__(
        self,
        positions: Callable[[Sequence[int]], tuple[int, int]],
        budget: StepBudget,
        sentence_of_window: Sequence[int] | None = None,
    ):
        self.positions, self.budget = positions, budget  # positions(window_ids): (real, padded) tokens the step encodes
        self.sentence_of_window = sentence_of_window  # a sentence longer than max_length is several windows
        self.steps: list[tuple[int, int, int, float]] = []

    @property
    def total(self) -> int:
        return self.budget.total

    def add(self, window_ids, seconds: float) -> bool:
        """Record one step (its sentences, tokens and time); True once every measured step is recorded."""
        real, padded = self.positions(window_ids)
        sow = self.sentence_of_window
        sentences = len({sow[i] for i in window_ids}) if sow is not None else len(window_ids)
        self.steps.append((sentences, real, padded, seconds))
        return len(self.steps) >= self.total

    def write(self, path: str, device, n_params: int, precision: str) -> None:
        b = self.budget
        res = summarise(blocks(self.steps, b.skip, b.steps, b.repeats))
        res |= totals(self.steps) | {
            "peak_memory_mib": peak_mem_mib(device),
            "parameters": n_params,
            "precision": precision,
        }
        # Model FLOP/s: 6 x parameters per real (non-padding) token, forward and backward (attention not counted).
        res["model_tflops"] = 6 * n_params * res["tokens_per_s"] / 1e12
        Path(path).write_text(json.dumps(res), encoding="utf-8")


def like_a_ray_worker() -> None:
    # Ray lowers its workers' priority by RAY_worker_niceness (15 by default) below the raylet's:
    # the HF recipes run the same, so that other work on the machine slows every system alike.
    os.nice(int(os.environ.get("RAY_worker_niceness", "15")))


def in_fresh_process(fn, *args):
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn"), initializer=like_a_ray_worker) as pool:
        return pool.submit(fn, *args).result()


def write_json(report: dict, out_dir: str) -> Path:
    p = Path(out_dir)
    p.mkdir(parents=True, exist_ok=True)
    path = p / f"{report['kind']}.json"
    path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return path


def ratio(results: dict, a: str, b: str) -> float | None:
    """sentences/s of system a over system b, when both ran."""
    if a in results and b in results:
        return results[a]["sentences_per_s"] / results[b]["sentences_per_s"]
    return None
