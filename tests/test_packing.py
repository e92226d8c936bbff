"""Padding-free packing (the GPU benchmark's packed systems): every sentence placed once, no row
over its length, and a packed forward computing for each sentence what it computes alone."""

from __future__ import annotations

import random

import pytest
import torch

from bioner.bench.packing import pack_rows, packed_batch, real_positions, sdpa_mask
from bioner.data.features import IGNORE


def sentences(n: int, seed: int = 0):
    rng = random.Random(seed)
    lengths = [rng.randint(3, 30) for _ in range(n)]
    ids = [[101] + [rng.randint(1000, 5000) for _ in range(k - 2)] + [102] for k in lengths]
    labels = [[IGNORE] + [rng.randint(0, 2) for _ in range(k - 2)] + [IGNORE] for k in lengths]
    return lengths, ids, labels


def test_first_fit_places_each_sentence_once_and_fills_rows():
    lengths, _, _ = sentences(200)
    stream = list(range(200))
    rows, left = pack_rows(lengths, stream, rows=6, row_len=64)
    placed = [s for r in rows for s in r]
    assert sorted(placed + left) == stream  # nothing lost, nothing twice
    assert left == [s for s in stream if s not in set(placed)]  # the rest keeps its order for the next step
    assert all(sum(lengths[s] for s in r) <= 64 for r in rows)
    assert sum(lengths[s] for s in placed) >= 0.9 * 6 * 64  # first fit leaves little room
    with pytest.raises(ValueError, match="more than a row's 16"):
        pack_rows([20], [0], rows=1, row_len=16)


def test_a_packed_forward_equals_each_sentence_alone():
    from transformers import BertConfig, BertForTokenClassification

    lengths, ids, labels = sentences(40)
    rows, _ = pack_rows(lengths, list(range(40)), rows=4, row_len=64)
    b = packed_batch(ids, labels, rows, 64, pad_id=0)
    assert real_positions(b["doc"], rows) == sum(lengths[s] for r in rows for s in r)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=6000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, num_labels=3)
    cfg._attn_implementation = "sdpa"
    model = BertForTokenClassification(cfg).eval()
    with torch.no_grad():
        packed = model(input_ids=b["input_ids"], attention_mask=sdpa_mask(b["doc"]), position_ids=b["position_ids"],
                       token_type_ids=b["token_type_ids"]).logits
        worst = 0.0
        for r, row in enumerate(rows):
            at = 0
            for s in row:
                alone = model(input_ids=torch.tensor([ids[s]])).logits[0]
                worst = max(worst, (alone - packed[r, at : at + lengths[s]]).abs().max().item())
                assert b["labels"][r, at : at + lengths[s]].tolist() == labels[s]
                at += lengths[s]
            assert (b["labels"][r, at:] == IGNORE).all()  # the padding tail has no loss
    assert worst < 1e-5
