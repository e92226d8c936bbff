"""Flex attention's form of a packed batch's block-diagonal mask (bioner.data.packing), for the GPU
benchmark (experiments/benchmarks/gpu_step.py): blocks outside every segment are skipped, where
SDPA's 4D boolean mask computes them and masks them out."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from torch.nn.attention.flex_attention import BlockMask


def flex_mask(segments: torch.Tensor) -> BlockMask:
    """A BlockMask: position q attends to k when both are in the same segment of their row."""
    from torch.nn.attention.flex_attention import create_block_mask  # lazy (platform/README.md)

    def same_segment(b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return segments[b, q] == segments[b, k]

    n, length = segments.shape
    return create_block_mask(same_segment, B=n, H=None, Q_LEN=length, KV_LEN=length, device=segments.device)
