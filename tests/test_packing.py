"""Padding-free packing: every row placed once, no packed row over its length, and a packed
forward computing for each row what it computes alone."""

from __future__ import annotations

import random

import pytest
import torch

from bioner.data.features import IGNORE, Encoded, NerWindow, Window
from bioner.data.packing import balanced_chunks, first_fit, pack_columns, packed_ner_batch, segment_mask


def sentences(n: int, seed: int = 0) -> Encoded:
    """`n` one-window sentences of random pieces and labels (one piece a word)."""
    rng = random.Random(seed)
    lengths = [rng.randint(3, 30) for _ in range(n)]
    ids = [[101] + [rng.randint(1000, 5000) for _ in range(k - 2)] + [102] for k in lengths]
    labels = [[IGNORE] + [rng.randint(0, 2) for _ in range(k - 2)] + [IGNORE] for k in lengths]
    windows = [
        NerWindow(i, Window(0, k - 2, 0, k - 2), ids[i], labels[i], list(range(1, k - 1)), (0,))
        for i, k in enumerate(lengths)
    ]
    return Encoded(windows=windows, n_labels=3)


def test_first_fit_places_each_row_once_and_fills_rows():
    enc = sentences(200)
    lengths = [len(window.input_ids) for window in enc.windows]
    stream = list(range(200))
    rows, left = first_fit(stream, lengths, 64, rows=6)
    placed = [s for r in rows for s in r]
    assert sorted(placed + left) == stream  # nothing lost, nothing twice
    assert left == [s for s in stream if s not in set(placed)]  # the rest keeps its order for the next batch
    assert all(sum(lengths[s] for s in r) <= 64 for r in rows)
    assert sum(lengths[s] for s in placed) >= 0.9 * 6 * 64  # first fit leaves little room
    every, none_left = first_fit(sorted(stream, key=lambda s: -lengths[s]), lengths, 64)
    assert none_left == [] and sorted(s for r in every for s in r) == stream
    assert len(every) == -(-sum(lengths) // 64)  # first-fit decreasing: no row more than needed here
    chunks = balanced_chunks(every, cap=10)
    assert [r for c in chunks for r in c] == every and max(map(len, chunks)) <= 10
    assert max(map(len, chunks)) - min(map(len, chunks)) <= 1
    with pytest.raises(ValueError, match="more than a packed row's 16"):
        first_fit([0], [20], 16)


def test_packed_columns_lay_rows_end_to_end_with_their_own_positions_and_segments():
    ids = [[1, 2, 3], [4, 5], [6], [7, 8, 9, 10]]
    scores = [[0.5, 0.25, 1.0], [2.0, 3.0], [4.0], [5.0, 6.0, 7.0, 8.0]]
    packed = [[3, 2], [0, 1], []]  # an empty packed row is all padding
    order = [s for row in packed for s in row]  # a column holds its values in the order `packed` lists them
    out, source = pack_columns(
        packed,
        6,
        {
            "input_ids": ([ids[s] for s in order], 0, torch.long),
            "score": ([scores[s] for s in order], -1.0, torch.float),
        },
    )
    assert out["input_ids"].tolist() == [[7, 8, 9, 10, 6, 0], [1, 2, 3, 4, 5, 0], [0] * 6]
    assert out["score"].dtype == torch.float and out["score"][1].tolist() == [0.5, 0.25, 1.0, 2.0, 3.0, -1.0]
    assert out["position_ids"].tolist() == [[0, 1, 2, 3, 0, 0], [0, 1, 2, 0, 1, 0], [0] * 6]
    # the padding tail: a segment of its own
    assert out["segments"].tolist() == [[0, 0, 0, 0, 1, 2], [0, 0, 0, 1, 1, 2], [0] * 6]
    assert source.tolist() == [[0, 0, 0, 0, 1, -1], [2, 2, 2, 3, 3, -1], [-1] * 6]
    with pytest.raises(ValueError, match="packed row 0 holds 7 positions, more than 6"):
        pack_columns([[3, 0]], 6, {"input_ids": ([ids[3], ids[0]], 0, torch.long)})
    with pytest.raises(ValueError, match="column 'score' has rows of other lengths"):
        pack_columns([[0]], 6, {"input_ids": ([ids[0]], 0, torch.long), "score": ([[1.0]], 0.0, torch.float)})
    with pytest.raises(ValueError, match="column 'input_ids' has 4 rows, `packed` places 1"):
        pack_columns([[0]], 6, {"input_ids": (ids, 0, torch.long)})


def test_a_packed_forward_equals_each_row_alone():
    from transformers import BertConfig, BertForTokenClassification

    enc = sentences(40)
    lengths = [len(window.input_ids) for window in enc.windows]
    rows, _ = first_fit(list(range(40)), lengths, 64, rows=4)
    b = packed_ner_batch(enc, rows, 64, pad_id=0)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=6000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, num_labels=3
    )
    cfg._attn_implementation = "sdpa"
    model = BertForTokenClassification(cfg).eval()
    with torch.no_grad():
        packed = model(
            input_ids=b["input_ids"], attention_mask=segment_mask(b["segments"]), position_ids=b["position_ids"]
        ).logits
        worst = 0.0
        for r, row in enumerate(rows):
            at = 0
            for s in row:
                alone = model(input_ids=torch.tensor([enc.windows[s].input_ids])).logits[0]
                worst = max(worst, (alone - packed[r, at : at + lengths[s]]).abs().max().item())
                assert b["labels"][r, at : at + lengths[s]].tolist() == enc.windows[s].labels
                assert b["position_ids"][r, at : at + lengths[s]].tolist() == list(range(lengths[s]))
                at += lengths[s]
            assert (b["labels"][r, at:] == IGNORE).all()  # the padding tail has no loss
    assert worst < 1e-5


def test_a_packed_step_has_the_unpacked_steps_loss_and_gradient(tmp_path, minilm_tokenizer, tiny_bert):
    """Both heads, partial annotation (a gold O allows the other corpus's types) and sampled MRC
    types (row weights): the packed step's loss and gradient are the micro-batched step's."""
    from bioner.config import TrainConfig
    from bioner.data.features import FeatureBuilder
    from bioner.data.job import load_job_data
    from bioner.model import build_model
    from bioner.train.step import Step
    from helpers import write_corpus, write_spec

    ab = "flu\tB-A\naspirin\tB-B\nx\tO\n\nfever\tB-A\nchronic\tO\nsalt\tB-B\nin\tO\nblood\tO\n\n" * 3
    c = "kinase\tB-C\nbinds\tO\nthe\tO\nreceptor\tB-C\nprotein\tI-C\n\nnothing\tO\n\n" * 3
    write_corpus(tmp_path / "ab", {"train": ab, "devel": ab, "test": ab})
    write_corpus(tmp_path / "c", {"train": c, "devel": c, "test": c})
    write_spec(tmp_path / "ab.yaml", "ab", types=("A", "B"), name="ab")
    write_spec(tmp_path / "c.yaml", "c", types=("C",), name="c")
    (tmp_path / "both.yaml").write_text("name: both\ncorpora: [ab.yaml, c.yaml]\n")
    cfg = TrainConfig(
        dataset=str(tmp_path / "both.yaml"),
        encoder=tiny_bert,
        query_source="annotation",
        mrc_types_per_sentence=1,
        seed=5,
        micro_batch_tokens=96,
        bf16=False,
    )  # fp32 both ways (an AMX CPU packs in bf16 by default)
    data = load_job_data(cfg)
    enc = FeatureBuilder(minilm_tokenizer, data.spec.labels, 64, data.queries, data.spec.types).encode(
        data.train.tokens, data.train.tags, mrc=True, annotated=data.train.annotated
    )
    torch.manual_seed(0)
    # no dropout: both ways compute one function
    model = build_model(tiny_bert, len(data.spec.labels), dropout=0.0).eval()
    params = [p for p in model.parameters()]
    window_ids = list(range(len(enc)))
    out = {}
    for packing in (False, True):
        step = Step(
            model,
            params,
            None,
            None,
            cfg.train_config(packing=packing),
            torch.device("cpu"),
            enc,
            minilm_tokenizer.pad_token_id,
        )
        assert step.packing is packing
        model.zero_grad(set_to_none=True)
        out[packing] = (
            step.backward(window_ids).tolist(),
            [p.grad.clone() for p in params],
            step.parts(window_ids),
            step.positions(window_ids),
        )
    (loss, grads, _, (real, _)), (p_loss, p_grads, p_parts, (p_real, _)) = out[False], out[True]
    # partial annotation, sampled types
    assert any(len(window.o_allowed) > 1 for window in enc.windows)
    assert any(len(window.mrc_rows) > 1 for window in enc.windows)
    assert len(p_parts) >= 2 and all(n is None or len(n) * step.row_len <= 96 for n, _ in p_parts)
    assert p_real == real  # the same inputs, laid out differently
    assert p_loss == pytest.approx(loss, rel=1e-5)
    worst = max(float(((a - b).abs() / (1e-7 + 1e-4 * a.abs())).max()) for a, b in zip(grads, p_grads, strict=True))
    assert worst <= 1.0
