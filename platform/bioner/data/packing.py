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
from itertools import chain
from typing import Mapping, Sequence

import numpy as np
import torch

from .features import IGNORE, Encoded


def first_fit(items: Sequence[int], lengths: Sequence[int], row_len: int, rows: int | None = None,
              patience: int = 64) -> tuple[list[list[int]], list[int]]:
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


def pack_columns(packed: Sequence[Sequence[int]], row_len: int,
                 columns: Mapping[str, tuple[Sequence[Sequence], object, torch.dtype]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Tensors (len(packed) x row_len) of `columns` (name -> (per-row values, padding value, dtype)),
    plus `position_ids` (restarting at each encoded row) and `segments` (which encoded row of its
    packed row a position holds; the padding tail is one more segment). Also returns `source`: for
    each position, the ordinal of its encoded row among all of `packed` in order, -1 on padding, to
    spread per-row values over positions (`table[source]`, the table's last row for padding).

    Built with one scatter per column over flat position indices, not a slice per encoded row: a
    GPU step of 1,024 sentences spent about 100 ms of Python here, longer than its forward."""
    n = len(packed)
    items = [s for row in packed for s in row]
    per_row = np.fromiter((len(row) for row in packed), dtype=np.int64, count=n)
    name0 = next(iter(columns))
    lengths = np.fromiter((len(columns[name0][0][s]) for s in items), dtype=np.int64, count=len(items))
    row_of = np.repeat(np.arange(n), per_row)  # packed row of each encoded row
    start = np.cumsum(lengths) - lengths  # where each encoded row starts among all positions laid end to end
    first = np.cumsum(per_row) - per_row  # each packed row's first encoded row (len(items) for an empty last one)
    row_start = np.append(start, lengths.sum())[first]  # where a packed row's positions start, end to end
    at = start - row_start[row_of]  # each encoded row's offset inside its packed row
    over = np.flatnonzero(at + lengths > row_len)
    if len(over):
        r = int(row_of[over[0]])
        raise ValueError(f"packed row {r} holds {int(lengths[row_of == r].sum())} positions, more than {row_len}")
    ordinal = np.repeat(np.arange(len(items)), lengths)  # for each real position, its encoded row
    in_item = np.arange(int(lengths.sum())) - np.repeat(start, lengths)  # its position inside that row
    dest = row_of[ordinal] * row_len + at[ordinal] + in_item  # flat index of each real position
    d_in_row = np.arange(len(items)) - first[row_of]  # which encoded row of its packed row

    def scatter(pad, dtype: torch.dtype, values) -> torch.Tensor:
        flat = np.full(n * row_len, pad, dtype=torch.empty(0, dtype=dtype).numpy().dtype)
        flat[dest] = values
        return torch.from_numpy(flat.reshape(n, row_len))

    out = {}
    for name, (values, pad, dtype) in columns.items():
        flat = list(chain.from_iterable(values[s] for s in items))
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


def packed_ner_batch(enc: Encoded, packed: Sequence[Sequence[int]], row_len: int, pad_id: int) -> dict[str, torch.Tensor]:
    """NER windows packed into rows; with partial annotation `o_allowed` per position (rows x L x labels)."""
    out, source = pack_columns(packed, row_len, {"input_ids": (enc.ner_ids, pad_id, torch.long), "labels": (enc.ner_labels, IGNORE, torch.long)})
    items = [i for row in packed for i in row]
    if any(len(enc.o_allowed[i]) > 1 for i in items):
        table = torch.zeros((len(items) + 1, enc.n_labels), dtype=torch.bool)  # last row: padding (never scored)
        for k, i in enumerate(items):
            table[k, list(enc.o_allowed[i])] = True
        table[-1, 0] = True
        out["o_allowed"] = table[source]
    return out


def packed_mrc_batch(enc: Encoded, packed: Sequence[Sequence[int]], row_len: int, pad_id: int,
                     weights: Mapping[int, float] | None = None) -> dict[str, torch.Tensor]:
    """MRC rows packed into rows; `weights` (MRC row -> loss weight) become `row_weight` per position."""
    columns = {
        "input_ids": (enc.mrc_ids, pad_id, torch.long),
        "token_type_ids": (enc.mrc_token_types, 0, torch.long),
        "start_labels": (enc.mrc_start, 0.0, torch.float),
        "end_labels": (enc.mrc_end, 0.0, torch.float),
        "label_mask": (enc.mrc_mask, 0, torch.float),
    }
    out, source = pack_columns(packed, row_len, columns)
    if weights is not None:
        table = torch.tensor([weights[i] for row in packed for i in row] + [0.0])  # last: padding
        out["row_weight"] = table[source]
    return out
