"""Padding-free packing: encoded rows laid end to end in rows of a fixed length.

Each encoded row (a sentence window, or an MRC query + passage) keeps its own [CLS] ... [SEP], its
own positions (0, 1, ... restart at every row) and attends only to itself through a block-diagonal
mask built from `segments`; the encoder then computes for each row exactly what it computes for
that row alone (BERT's attention takes a 4D boolean mask through SDPA as it is), while almost no
position is padding. The padding tail of a packed row is a segment of its own, so that no query
row of the mask is empty; its labels are ignored and its loss weight is 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import chain

import numpy as np
import torch

from .batch_types import MrcBatch, NerBatch
from .features import IGNORE, Encoded


def first_fit(
    items: Sequence[int], lengths: Sequence[int], row_len: int, rows: int | None = None, patience: int = 64
) -> tuple[list[list[int]], list[int]]:
    """First fit of `items` (in their order; sort them longest first for first-fit decreasing) into
    rows of `row_len` positions: each item goes to the first row with room for it.

    `rows=None` opens a new row whenever none has room, and places everything. With a fixed number
    of `rows`, the items that fit nowhere are returned (in their order) to open the next batch, and
    packing stops after `patience` such items in a row (the rows are full enough).
    """
    free: list[int] = [] if rows is None else [row_len] * rows
    out: list[list[int]] = [[] for _ in free]
    left: list[int] = []
    misses = 0
    for k, s in enumerate(items):
        n = lengths[s]
        if n > row_len:
            raise ValueError(f"row {s} has {n} positions, more than a packed row's {row_len}")
        r = next((i for i, f in enumerate(free) if f >= n), None)
        if r is None and rows is None:
            free.append(row_len)
            out.append([])
            r = len(out) - 1
        if r is None:
            left.append(s)
            misses += 1
            if misses >= patience:
                left.extend(items[k + 1 :])
                break
            continue
        misses = 0
        out[r].append(s)
        free[r] -= n
    return out, left


def balanced_chunks(rows: list[list[int]], cap: int) -> list[list[list[int]]]:
    """Packed rows cut into the fewest forwards of at most `cap` rows, of near-equal sizes."""
    if not rows:
        return []
    k = math.ceil(len(rows) / max(1, cap))
    size = math.ceil(len(rows) / k)
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def pack_columns(
    packed: Sequence[Sequence[int]],
    row_len: int,
    columns: Mapping[str, tuple[Sequence[Sequence[float]], float, torch.dtype]],
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Tensors (len(packed) x row_len) of `columns` (name -> (values of each encoded row, in the order
    `packed` lists them, padding value, dtype)), plus `position_ids` (restarting at each encoded row)
    and `segments` (which encoded row of its packed row a position holds; the padding tail is one more
    segment). Also returns `source`: for each position, the ordinal of its encoded row among all of
    `packed` in order, -1 on padding, to spread per-row values over positions (`table[source]`, the
    table's last row for padding).

    Built with one scatter per column over flat position indices, not a slice per encoded row: the
    Python of a slice per row would cost more than the forward it feeds."""
    n = len(packed)
    per_row = np.fromiter((len(row) for row in packed), dtype=np.int64, count=n)
    n_items = int(per_row.sum())
    name0 = next(iter(columns))
    for name, (values, _, _) in columns.items():
        if len(values) != n_items:
            raise ValueError(f"packing: column {name!r} has {len(values)} rows, `packed` places {n_items}")
    lengths = np.fromiter((len(v) for v in columns[name0][0]), dtype=np.int64, count=n_items)
    row_of = np.repeat(np.arange(n), per_row)  # packed row of each encoded row
    start = np.cumsum(lengths) - lengths  # where each encoded row starts among all positions laid end to end
    first = np.cumsum(per_row) - per_row  # each packed row's first encoded row (n_items for an empty last one)
    row_start = np.append(start, lengths.sum())[first]  # where a packed row's positions start, end to end
    at = start - row_start[row_of]  # each encoded row's offset inside its packed row
    over = np.flatnonzero(at + lengths > row_len)
    if len(over):
        r = int(row_of[over[0]])
        raise ValueError(f"packed row {r} holds {int(lengths[row_of == r].sum())} positions, more than {row_len}")
    ordinal = np.repeat(np.arange(n_items), lengths)  # for each real position, its encoded row
    in_item = np.arange(int(lengths.sum())) - np.repeat(start, lengths)  # its position inside that row
    dest = row_of[ordinal] * row_len + at[ordinal] + in_item  # flat index of each real position
    d_in_row = np.arange(n_items) - first[row_of]  # which encoded row of its packed row

    def scatter(pad: float, dtype: torch.dtype, values: Sequence[float] | np.ndarray) -> torch.Tensor:
        flat = np.full(n * row_len, pad, dtype=torch.empty(0, dtype=dtype).numpy().dtype)
        flat[dest] = values
        return torch.from_numpy(flat.reshape(n, row_len))

    out = {}
    for name, (values, pad, dtype) in columns.items():
        flat = list(chain.from_iterable(values))
        if len(flat) != len(dest):
            raise ValueError(f"packing: column {name!r} has rows of other lengths than {name0!r}")
        out[name] = scatter(pad, dtype, flat)
    out["position_ids"] = scatter(0, torch.long, in_item)
    segments = np.repeat(per_row, row_len)  # the padding tail: one segment past the row's last encoded row
    segments[dest] = d_in_row[ordinal]
    out["segments"] = torch.from_numpy(segments.reshape(n, row_len))
    source = scatter(-1, torch.long, ordinal)
    return out, source


def segment_mask(segments: torch.Tensor) -> torch.Tensor:
    """(rows, 1, L, L) boolean attention mask: a position attends to the positions of its own segment."""
    return (segments[:, :, None] == segments[:, None, :])[:, None]


def packed_ner_batch(enc: Encoded, packed: Sequence[Sequence[int]], row_len: int, pad_id: int) -> NerBatch:
    """NER windows (ids in `packed`) packed into rows; with partial annotation `o_allowed` per position
    (rows x L x labels)."""
    windows = [enc.windows[k] for row in packed for k in row]
    cols, source = pack_columns(
        packed,
        row_len,
        {
            "input_ids": ([window.input_ids for window in windows], pad_id, torch.long),
            "labels": ([window.labels for window in windows], IGNORE, torch.long),
        },
    )
    out = NerBatch(
        input_ids=cols["input_ids"], labels=cols["labels"], position_ids=cols["position_ids"], segments=cols["segments"]
    )
    if any(len(window.o_allowed) > 1 for window in windows):
        table = torch.zeros((len(windows) + 1, enc.n_labels), dtype=torch.bool)  # last row: padding (never scored)
        for j, window in enumerate(windows):
            table[j, list(window.o_allowed)] = True
        table[-1, 0] = True
        out["o_allowed"] = table[source]
    return out


def packed_mrc_batch(
    enc: Encoded, packed: Sequence[Sequence[int]], row_len: int, pad_id: int, weights: Mapping[int, float] | None = None
) -> MrcBatch:
    """MRC rows packed into rows; `weights` (MRC row -> loss weight) become `row_weight` per position."""
    rows = [enc.mrc[r] for row in packed for r in row]
    cols, source = pack_columns(
        packed,
        row_len,
        {
            "input_ids": ([m.input_ids for m in rows], pad_id, torch.long),
            "token_type_ids": ([m.token_type_ids for m in rows], 0, torch.long),
            "start_labels": ([m.start for m in rows], 0.0, torch.float),
            "end_labels": ([m.end for m in rows], 0.0, torch.float),
            "label_mask": ([m.label_mask for m in rows], 0, torch.float),
        },
    )
    out = MrcBatch(
        input_ids=cols["input_ids"],
        token_type_ids=cols["token_type_ids"],
        start_labels=cols["start_labels"],
        end_labels=cols["end_labels"],
        label_mask=cols["label_mask"],
        position_ids=cols["position_ids"],
        segments=cols["segments"],
    )
    if weights is not None:
        table = torch.tensor([weights[r] for row in packed for r in row] + [0.0])  # last: padding
        out["row_weight"] = table[source]
    return out
