"""The batch layouts that data/ writes, train.step moves to the device and model.network reads.

They are plain dicts at run time (a TypedDict costs nothing and `.to(device)` applies per key);
the types name every key once, so a misspelt key is caught by a type checker, not three layers away.

A padded batch (data.batching) holds `attention_mask`. A packed batch (data.packing) leaves the
host with `segments` and `position_ids` instead; train.step turns `segments` into a 4D
`attention_mask` on the device, so the network always reads `attention_mask`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:  # typing.NotRequired is Python >= 3.11; the annotations are never evaluated at run time
    from torch import Tensor
    from typing_extensions import NotRequired


class EncoderInputs(TypedDict):
    """What the encoder reads; every tensor is (rows, L) unless said otherwise."""

    input_ids: Tensor
    # 1 on real positions, 0 on padding; a packed batch on the device: (rows, 1, L, L) booleans
    attention_mask: NotRequired[Tensor]
    token_type_ids: NotRequired[Tensor]  # 0 query, 1 passage (MRC rows with a query)
    position_ids: NotRequired[Tensor]  # packed rows: positions restart at every encoded row
    segments: NotRequired[Tensor]  # packed rows, on the host: which encoded row of its packed row a position holds


class NerBatch(EncoderInputs):
    """NER windows, as one batch of the token-classification head."""

    labels: NotRequired[Tensor]  # label id on each word's first piece, IGNORE elsewhere; absent at inference
    # partial annotation: the labels a gold O stands for, (rows, labels) padded or (rows, L, labels) packed
    o_allowed: NotRequired[Tensor]
    loss_denom: NotRequired[Tensor]  # a micro-batch: its optimizer batch's labelled-token count (a scalar)


class MrcBatch(EncoderInputs):
    """MRC rows ([CLS] query [SEP] passage [SEP]), as one batch of the start/end heads."""

    start_labels: Tensor  # 1.0 on the first piece of an entity's first word
    end_labels: Tensor  # 1.0 on the first piece of an entity's last word
    label_mask: Tensor  # 1 on the first piece of each passage word: the positions the loss counts
    # sampled entity types: each row's loss weight, (rows,) padded or (rows, L) per position packed
    row_weight: NotRequired[Tensor]
    loss_denom: NotRequired[Tensor]  # a micro-batch: its optimizer batch's passage-word count (a scalar)
