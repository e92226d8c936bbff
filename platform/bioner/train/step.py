"""One optimizer step over a batch of windows: their NER and MRC rows, forward and backward.

A window is a sentence, or a piece of one longer than max_length (data.features). The unit of the
step is the sampler's batch of windows (random, as the HF recipe's batch of sentences). Inside it
the rows run as length-sorted micro-batches of bounded padded positions, each loss divided by
the whole batch's count (labelled tokens for NER, passage words for MRC) and the gradients
accumulated, so that the step's gradient is the batch's gradient while almost no position is
padding. With packing (the default where the step runs bf16: a GPU, an AMX CPU), a micro-batch is
rows of one width holding several inputs end to end, each attending only to itself
(bioner.data.packing). With DDP, only the last micro-batch synchronises gradients; it holds rows of
both tasks so that every head takes part in that one synchronised backward.

A sentence is asked only about the types its corpus annotates. With `mrc_types_per_sentence: k`,
k of them are drawn per sentence and epoch (seeded; every window of a sentence draws the same) and
each drawn row's loss is weighted by the inverse of its probability, over the full rows' count: the
MRC loss's expectation is the full loss.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

import torch
from torch.nn.parallel import DistributedDataParallel

from ..config import TrainConfig
from ..data.batch_types import MrcBatch, NerBatch
from ..data.batching import micro_batches, mrc_batch, mrc_rows, ner_batch
from ..data.features import IGNORE, Encoded
from ..data.packing import balanced_chunks, first_fit, packed_mrc_batch, packed_ner_batch, segment_mask
from ..errors import BionerError

if TYPE_CHECKING:
    from torch.optim.lr_scheduler import LRScheduler

# Padded positions per training micro-batch (experiments/benchmarks/README.md, "What was tried" and "GPU"). CPU:
# small products stay in cache. GPU: only a memory bound, since larger is faster there, so the bound
# grows with the free memory (gpu_micro_tokens), never below GPU_MICRO_TOKENS.
CPU_MICRO_TOKENS, GPU_MICRO_TOKENS, GPU_MICRO_TOKENS_MAX = 4096, 16384, 131072
# Activation bytes a position costs per hidden unit and layer in training at bf16 autocast, with a
# margin, and the share of the free memory the micro-batch may take.
BYTES_PER_POSITION_UNIT, GPU_MEMORY_SHARE = 64, 0.5
# What one more micro-batch costs, in padded positions (see data.batching.micro_batches).
CPU_OVERHEAD, GPU_OVERHEAD = 128, 4096
# Narrower encoders train fp32 on a CPU: their products are too small for AMX to repay autocast's casts.
CPU_BF16_MIN_WIDTH = 256

# (NER rows, MRC rows) of one forward: window ids and MRC row ids; packed, a list of packed rows of each
Part = tuple[list | None, list | None]
Batch = TypeVar("Batch", NerBatch, MrcBatch)


def native_bf16(device: torch.device) -> bool:
    """Whether the chip multiplies bf16 matrices natively: a CUDA GPU that supports bf16, or a CPU
    with AMX tiles (Intel Xeon from Sapphire Rapids on). Elsewhere a CPU emulates bf16, and autocast
    would only add casts."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        amx = getattr(torch.cpu, "_is_amx_tile_supported", None)  # torch >= 2.3; private, hence the guard
        return bool(amx and amx())
    return False


def gpu_micro_tokens(free_bytes: int, hidden: int, layers: int, bf16: bool, tasks: int = 1) -> int:
    """Padded positions per task and GPU micro-batch: what GPU_MEMORY_SHARE of the free memory holds
    at BYTES_PER_POSITION_UNIT per position, hidden unit and layer (twice that in fp32), shared by the
    `tasks` whose rows one forward may hold, between GPU_MICRO_TOKENS and GPU_MICRO_TOKENS_MAX."""
    per_position = BYTES_PER_POSITION_UNIT * hidden * layers * (1 if bf16 else 2) * tasks
    fits = int(GPU_MEMORY_SHARE * free_bytes / per_position)
    return max(GPU_MICRO_TOKENS, min(GPU_MICRO_TOKENS_MAX, fits))


def unwrap(model: torch.nn.Module) -> Any:
    """The network inside torch.compile's and DDP's wrappers (a BioNERModel in training)."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def plan_precision(cfg: TrainConfig, device: torch.device, model: torch.nn.Module | None) -> tuple[bool, bool]:
    """(bf16 autocast, packing) of a step, decided together: each depends on the other on a CPU.

    bf16 (`bf16`, default on) runs where the chip multiplies bf16 natively. On an AMX CPU it pays
    only with packing (experiments/benchmarks/README.md): oneDNN builds its bf16 kernels once per
    shape, and packed micro-batches have one width and few row counts, where length-sorted ones
    bring a new shape at every forward; and only for encoders at least
    CPU_BF16_MIN_WIDTH wide. Packing (`packing`, default: where the step would run bf16) needs
    micro-batches and an encoder whose attention takes a 4D mask (SDPA); the default falls back
    quietly where it cannot pack, `packing: true` there is refused."""
    cuda = device.type == "cuda"
    encoder = getattr(getattr(unwrap(model), "encoder", None), "config", None)  # None: no model to ask
    attn = getattr(encoder, "_attn_implementation", "sdpa")
    width = getattr(encoder, "hidden_size", float("inf"))
    bf16 = cfg.bf16 and native_bf16(device) and (cuda or width >= CPU_BF16_MIN_WIDTH)
    if cfg.packing and cfg.micro_batching and attn != "sdpa":
        raise BionerError(f"packing: the encoder's attention is {attn!r}; packed rows need 'sdpa' (set packing: false)")
    wanted = cfg.packing if cfg.packing is not None else (cuda or bf16)
    packing = bool(wanted) and cfg.micro_batching and attn == "sdpa"
    return bf16 and (cuda or packing), packing


def precision_name(bf16: bool) -> str:
    """How a run's precision is reported (MLflow tag `bioner.precision`, bench tables)."""
    return "bf16 autocast" if bf16 else "fp32"


class Step:
    """Callable: `step(window_ids)` trains on the NER windows `window_ids` (and their MRC rows), returns
    (loss, NER loss, MRC loss)."""

    def __init__(
        self,
        model: torch.nn.Module | None,
        params: list[torch.nn.Parameter],
        opt: torch.optim.Optimizer | None,
        sched: LRScheduler | None,
        cfg: TrainConfig,
        device: torch.device,
        enc: Encoded,
        pad_id: int,
    ):
        self.model, self.params, self.opt, self.sched, self.cfg = model, params, opt, sched, cfg
        self.device, self.enc, self.pad_id = device, enc, pad_id
        self.multiple = 8 if device.type == "cuda" else 1  # tensor-core friendly shapes on GPU
        self.bf16, self.packing = plan_precision(cfg, device, model)
        self.pin = device.type == "cuda"  # pinned host memory makes the copy asynchronous
        default = CPU_MICRO_TOKENS
        if device.type == "cuda" and cfg.micro_batching and not cfg.micro_batch_tokens:
            encoder = unwrap(model).encoder.config
            tasks = 2 if cfg.multitask and cfg.alpha > 0 else 1
            default = gpu_micro_tokens(
                torch.cuda.mem_get_info(device)[0],
                getattr(encoder, "hidden_size", 768),
                getattr(encoder, "num_hidden_layers", 12),
                self.bf16,
                tasks,
            )
        self.max_tokens = (cfg.micro_batch_tokens or default) if cfg.micro_batching else None
        self.overhead = GPU_OVERHEAD if device.type == "cuda" else CPU_OVERHEAD
        self.ner_len = [len(window.input_ids) for window in enc.windows]  # per window
        self.mrc_len = [len(m.input_ids) for m in enc.mrc]  # per MRC row
        self.ner_count = [sum(1 for x in window.labels if x != IGNORE) for window in enc.windows]
        self.mrc_count = [sum(m.label_mask) for m in enc.mrc]
        self.epoch = 0
        longest = max(self.ner_len + self.mrc_len, default=1)
        self.row_len = -(-longest // 8) * 8  # a packed row: the longest input, rounded to a multiple of 8

    @property
    def precision(self) -> str:
        return precision_name(self.bf16)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch  # which entity types are drawn, when they are sampled

    def mrc_plan(self, window_ids: Sequence[int]) -> dict[int, float]:
        """MRC row -> loss weight for the step's windows: every annotated type (weight 1), or k drawn
        per sentence (weight annotated / k); the draw depends on the seed, the epoch and the sentence."""
        k, out = self.cfg.mrc_types_per_sentence, {}
        for window_id in window_ids:
            window = self.enc.windows[window_id]
            rows = window.mrc_rows
            if k is None or len(rows) <= k:
                out.update((r, 1.0) for r in rows)
            else:
                rng = random.Random(f"{self.cfg.seed}:{self.epoch}:{window.sentence}")
                out.update((r, len(rows) / k) for r in rng.sample(rows, k))
        return out

    def parts(self, window_ids: Sequence[int], plan: dict[int, float] | None = None) -> list[Part]:
        """The forwards of one step: micro-batches of each task, aligned so the last has both.
        `plan`: the step's mrc_plan(window_ids), when the caller has it already."""
        ner = list(window_ids) if self.cfg.alpha > 0 else []
        mrc = list(self.mrc_plan(window_ids) if plan is None else plan) if self.cfg.multitask else []
        if self.max_tokens is None:
            return [(ner or None, mrc or None)]
        if self.packing:  # first-fit decreasing into rows of row_len, then forwards of at most max_tokens positions
            cap = self.max_tokens // self.row_len
            ner_packed = first_fit(sorted(ner, key=lambda r: -self.ner_len[r]), self.ner_len, self.row_len)[0]
            mrc_packed = first_fit(sorted(mrc, key=lambda r: -self.mrc_len[r]), self.mrc_len, self.row_len)[0]
            n, m = balanced_chunks(ner_packed, cap), balanced_chunks(mrc_packed, cap)
            k = max(len(n), len(m))
            return list(zip([None] * (k - len(n)) + n, [None] * (k - len(m)) + m, strict=True))
        n = micro_batches(ner, self.ner_len, self.max_tokens, self.overhead) if ner else []
        m = micro_batches(mrc, self.mrc_len, self.max_tokens, self.overhead) if mrc else []
        k = max(len(n), len(m))
        return list(zip([None] * (k - len(n)) + n, [None] * (k - len(m)) + m, strict=True))

    def positions(self, window_ids: Sequence[int]) -> tuple[int, int]:
        """(real, padded) token positions the encoder sees in this step."""
        real = padded = 0
        for n, m in self.parts(window_ids):
            for lengths, rows in ((self.ner_len, n), (self.mrc_len, m)):
                if rows and self.packing:
                    real += sum(lengths[r] for row in rows for r in row)
                    padded += len(rows) * self.row_len
                elif rows:
                    ls = [lengths[r] for r in rows]
                    real, padded = real + sum(ls), padded + len(ls) * max(ls)
        return real, padded

    def backward(self, window_ids: Sequence[int]) -> torch.Tensor:
        """Forward and backward over the step's parts: gradients accumulate in the parameters.
        Returns the step's (loss, NER loss, MRC loss) on the device."""
        plan = self.mrc_plan(window_ids) if self.cfg.multitask else {}
        parts = self.parts(window_ids, plan)
        sampled = any(weight != 1.0 for weight in plan.values())
        denoms = None
        if self.max_tokens is not None or sampled:  # each part's loss is its share of the whole batch's mean
            denoms = (
                max(1, sum(self.ner_count[k] for k in window_ids)),
                max(1, sum(self.mrc_count[r] for r in mrc_rows(self.enc, window_ids))),
            )
        totals = torch.zeros(3, device=self.device)
        for k, (n, m) in enumerate(parts):
            ner: NerBatch | None = None
            mrc: MrcBatch | None = None
            if self.packing:
                if n:
                    ner = self._to_dev(packed_ner_batch(self.enc, n, self.row_len, self.pad_id), denoms[0])
                if m:
                    batch = packed_mrc_batch(self.enc, m, self.row_len, self.pad_id, plan if sampled else None)
                    mrc = self._to_dev(batch, denoms[1])
            else:
                if n:
                    ner = self._to_dev(ner_batch(self.enc, n, self.pad_id, self.multiple), denoms and denoms[0])
                if m:
                    weights = [plan[r] for r in m] if sampled else None
                    batch = mrc_batch(self.enc, m, self.pad_id, self.multiple, weights)
                    mrc = self._to_dev(batch, denoms and denoms[1])
            with self._sync(k == len(parts) - 1):
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                    loss, l_ner, l_mrc = self.model(ner, mrc, self.cfg.alpha, self.cfg.beta)
                loss.backward()
            totals += torch.stack([loss.detach(), l_ner, l_mrc]).float()
        return totals

    def __call__(self, window_ids: Sequence[int]) -> list[float]:
        totals = self.backward(window_ids)
        torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        return totals.tolist()  # one device sync a step: the step has finished, on GPU too

    def _to_dev(self, batch: Batch, denom: int | None) -> Batch:
        if denom is not None:
            batch["loss_denom"] = torch.tensor(float(denom))
        moved = {k: (v.pin_memory() if self.pin else v).to(self.device, non_blocking=True) for k, v in batch.items()}
        out = cast(Batch, moved)
        if "segments" in out:  # packed rows: the block-diagonal mask is built where it is used
            out["attention_mask"] = segment_mask(out.pop("segments"))
        return out

    def _sync(self, last: bool) -> contextlib.AbstractContextManager:
        """DDP reduces gradients only on the step's last backward (no_sync before it)."""
        ddp = getattr(self.model, "_orig_mod", self.model)
        if last or not isinstance(ddp, DistributedDataParallel):
            return contextlib.nullcontext()
        return ddp.no_sync()
