"""Padding-free packing, for the GPU throughput benchmark (experiments/benchmarks/gpu_step.py).

Sentences are laid end to end in rows of a fixed length; each keeps its own [CLS] ... [SEP], its
own positions (0, 1, ... restart at every sentence) and attends only to itself, through a
block-diagonal mask: SDPA with a 4D boolean mask, or flex attention with a document BlockMask
(transformers passes a 4D mask or a BlockMask to BERT's attention as it is). The encoder then
computes for each sentence exactly what it computes for that sentence alone, and almost no
position is padding; every step has the same shape, which suits torch.compile and CUDA graphs.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..data.features import IGNORE


def pack_rows(lengths: Sequence[int], stream: Sequence[int], rows: int, row_len: int, patience: int = 64) -> tuple[list[list[int]], list[int]]:
    """First fit of the sentences `stream` (in its order) into `rows` rows of `row_len` positions.

    Returns the rows (sentence indices, in order) and the sentences of `stream` that were not placed,
    in their order: the next step starts with them. Stops after `patience` sentences in a row fit
    nowhere (the rows are full enough). A sentence longer than `row_len` is an error: truncate first.
    """
    free, out, left = [row_len] * rows, [[] for _ in range(rows)], []
    misses = 0
    for k, s in enumerate(stream):
        n = lengths[s]
        if n > row_len:
            raise ValueError(f"sentence {s} has {n} positions, more than a row's {row_len}")
        r = next((i for i, f in enumerate(free) if f >= n), None)
        if r is None:
            left.append(s)
            misses += 1
            if misses >= patience:
                left.extend(stream[k + 1 :])
                break
            continue
        misses = 0
        out[r].append(s)
        free[r] -= n
    return out, left


def packed_batch(ids: Sequence[Sequence[int]], labels: Sequence[Sequence[int]], rows: list[list[int]], row_len: int, pad_id: int) -> dict:
    """Tensors of packed rows: input_ids, position_ids, token_type_ids, labels (IGNORE on padding)
    and `doc` (which sentence of its row a position belongs to; padding is a segment of its own, so
    that no query row of the mask is empty)."""
    n = len(rows)
    out = {
        "input_ids": torch.full((n, row_len), pad_id, dtype=torch.long),
        "position_ids": torch.zeros((n, row_len), dtype=torch.long),
        "token_type_ids": torch.zeros((n, row_len), dtype=torch.long),
        "labels": torch.full((n, row_len), IGNORE, dtype=torch.long),
        "doc": torch.full((n, row_len), -1, dtype=torch.long),
    }
    for r, sentences in enumerate(rows):
        at = 0
        for d, s in enumerate(sentences):
            k = len(ids[s])
            out["input_ids"][r, at : at + k] = torch.tensor(ids[s])
            out["labels"][r, at : at + k] = torch.tensor(labels[s])
            out["position_ids"][r, at : at + k] = torch.arange(k)
            out["doc"][r, at : at + k] = d
            at += k
        out["doc"][r, at:] = len(sentences)  # the padding tail: one more segment
    return out


def real_positions(doc: torch.Tensor, rows: list[list[int]]) -> int:
    """Positions that hold a sentence (not the padding tail)."""
    return int(sum((doc[r] < len(s)).sum() for r, s in enumerate(rows)))


def sdpa_mask(doc: torch.Tensor) -> torch.Tensor:
    """(rows, 1, L, L) boolean: position q attends to k when both are in the same segment."""
    return (doc[:, :, None] == doc[:, None, :])[:, None]


def flex_mask(doc: torch.Tensor):
    """The same block-diagonal mask as a flex-attention BlockMask (blocks outside every segment skipped)."""
    from torch.nn.attention.flex_attention import create_block_mask  # lazy: only the flex system needs it

    def same_segment(b, h, q, k):
        return doc[b, q] == doc[b, k]

    n, length = doc.shape
    return create_block_mask(same_segment, B=n, H=None, Q_LEN=length, KV_LEN=length, device=doc.device)
