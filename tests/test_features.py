import collections

import pytest

from bioner.data.batching import LengthGroupedBatches, mrc_batch, mrc_rows, ner_batch
from bioner.data.features import IGNORE, FeatureBuilder, make_windows
from bioner.data.queries import Queries

LABELS = ["O", "B-Disease", "I-Disease", "B-Gene", "I-Gene"]
TEXTS = {
    "Disease": {"wikipedia": "w", "annotation": "disease query", "dictionary": "d"},
    "Gene": {"wikipedia": "w", "annotation": "gene query", "dictionary": "d"},
}


def test_ner_labels_sit_on_first_pieces(minilm_tokenizer):
    fb = FeatureBuilder(minilm_tokenizer, LABELS, 64)
    words = ["adenomatous", "polyposis", "of", "BRCA1"]
    tags = ["B-Disease", "I-Disease", "O", "B-Gene"]
    enc = fb.encode([words], [tags])
    window = enc.windows[0]
    ids, labels, first = window.input_ids, window.labels, window.first_pos
    assert ids[0] == minilm_tokenizer.cls_token_id and ids[-1] == minilm_tokenizer.sep_token_id
    assert [labels[p] for p in first] == [1, 2, 0, 3]
    assert sum(label != IGNORE for label in labels) == 4  # continuation pieces and specials ignored
    assert minilm_tokenizer.decode(ids[first[0] : first[1]]).replace(" ", "") == "adenomatous"


def test_mrc_input_targets_and_masks(minilm_tokenizer):
    q = Queries(TEXTS, "annotation")
    fb = FeatureBuilder(minilm_tokenizer, LABELS, 64, q, ["Disease", "Gene"])
    words = ["the", "adenomatous", "polyposis", "coli", "and", "BRCA1"]
    tags = ["O", "B-Disease", "I-Disease", "I-Disease", "O", "B-Gene"]
    enc = fb.encode([words], [tags], mrc=True)
    assert len(enc.mrc) == 2 and enc.windows[0].mrc_rows == [0, 1] and [m.entity_type for m in enc.mrc] == [0, 1]
    cls, sep = minilm_tokenizer.cls_token_id, minilm_tokenizer.sep_token_id
    qids = minilm_tokenizer("disease query", add_special_tokens=False)["input_ids"]
    d = enc.mrc[0]  # window 0 asked about Disease
    assert d.input_ids[: len(qids) + 2] == [cls] + qids + [sep] and d.input_ids[-1] == sep
    off = d.offset
    pos = [p - 1 + off for p in enc.windows[0].first_pos]  # first pieces of words in the MRC input
    assert [d.start[p] for p in pos] == [0, 1, 0, 0, 0, 0]
    assert [d.end[p] for p in pos] == [0, 0, 0, 1, 0, 0]
    g = enc.mrc[1]  # Gene
    assert [g.start[p] for p in pos] == [0, 0, 0, 0, 0, 1]
    assert [g.end[p] for p in pos] == [0, 0, 0, 0, 0, 1]
    mask = d.label_mask
    assert sum(mask) == len(words) and all(mask[i] == 0 for i in range(off))  # query and [CLS] masked
    assert mask[-1] == 0  # final [SEP]
    assert d.token_type_ids[:off] == [0] * off and set(d.token_type_ids[off:]) == {1}


def test_none_source_builds_cls_passage_sep(minilm_tokenizer):
    fb = FeatureBuilder(minilm_tokenizer, LABELS, 64, Queries(TEXTS, "none"), ["Disease"])
    enc = fb.encode([["flu"]], [["B-Disease"]], mrc=True)
    assert enc.mrc[0].input_ids == enc.windows[0].input_ids and enc.mrc[0].offset == 1


def test_windows_cover_every_word_once():
    for n_pieces, budget in ([[1] * 40, 10], [[3, 1, 7, 2, 2, 9, 1, 1, 4] * 5, 12], [[20, 1, 1], 8]):
        windows = make_windows(n_pieces, budget)
        owned = [j for window in windows for j in range(window.own_start, window.own_end)]
        assert owned == list(range(len(n_pieces)))
        for window in windows:
            assert window.start <= window.own_start <= window.own_end <= window.end
            fits = sum(min(k, budget) for k in n_pieces[window.start : window.end]) <= budget
            assert fits or window.end - window.start == 1
    assert make_windows([1] * 5, 10) == [make_windows([1] * 5, 10)[0]] and make_windows([1] * 5, 10)[0].end == 5


def test_long_sentence_is_windowed_with_labels_kept(minilm_tokenizer):
    fb = FeatureBuilder(minilm_tokenizer, LABELS, 16)  # 14 pieces per window
    words = [f"w{i}" for i in range(40)]
    tags = ["B-Disease" if i % 7 == 0 else "O" for i in range(40)]
    enc = fb.encode([words], [tags])
    assert len(enc) > 1 and all(len(window.input_ids) <= 16 for window in enc.windows)
    assert {window.sentence for window in enc.windows} == {0}
    seen = {}
    for window in enc.windows:
        span = window.span
        for j in range(span.own_start, span.own_end):
            seen[j] = window.labels[window.first_pos[j - span.start]]
    assert [seen[j] for j in range(40)] == [1 if i % 7 == 0 else 0 for i in range(40)]


def test_a_sentence_longer_than_the_encoder_is_windowed_without_a_warning():
    """transformers warns "Token indices sequence length is longer than the specified maximum" for a
    sentence of more pieces than the model takes; it does not apply here (the sentence is windowed
    before any model sees it), so normal use must not print it."""
    import logging

    from bioner.model import load_tokenizer

    tok = load_tokenizer("minilm")  # a fresh tokenizer: it gives that warning once in its life
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    hf_logger = logging.getLogger("transformers")  # it does not propagate to the root logger
    level = hf_logger.level
    hf_logger.addHandler(handler)
    hf_logger.setLevel(logging.WARNING)  # as a user's process has it, whatever an earlier test set
    try:
        words = ["adenomatous", "polyposis"] * 400  # about 2,000 pieces, beyond MiniLM's 512
        enc = FeatureBuilder(tok, LABELS, 64).encode([words], [["O"] * len(words)])
        assert len(enc) > 1 and not [m for m in seen if "Token indices sequence length" in m]
        tok([words], is_split_into_words=True, add_special_tokens=False)  # the tokenizer as called before
        assert [m for m in seen if "Token indices sequence length" in m]  # the warning this test looks for
    finally:
        hf_logger.removeHandler(handler)
        hf_logger.setLevel(level)


def test_dropped_characters_still_get_a_position(minilm_tokenizer):
    fb = FeatureBuilder(minilm_tokenizer, LABELS, 32)
    enc = fb.encode([["a", "\u200b", "b"]], [["O", "O", "O"]])
    assert len(enc.windows[0].first_pos) == 3


def test_batches_pad_to_the_longest_in_batch_not_max_length(minilm_tokenizer):
    q = Queries(TEXTS, "annotation")
    fb = FeatureBuilder(minilm_tokenizer, LABELS, 256, q, ["Disease", "Gene"])
    enc = fb.encode([["a"] * 3, ["b"] * 9], [["O"] * 3, ["O"] * 9], mrc=True)
    nb = ner_batch(enc, [0, 1], 0)
    assert nb["input_ids"].shape == (2, 11) and nb["attention_mask"].sum() == 5 + 11
    mb = mrc_batch(enc, mrc_rows(enc, [0, 1]), 0)
    assert mb["input_ids"].shape[0] == 4 and mb["input_ids"].shape[1] == max(len(m.input_ids) for m in enc.mrc)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_length_grouped_batches_yield_each_example_once_per_epoch(world):
    lengths = [(i * 37) % 101 + 1 for i in range(1003)]
    seen = collections.Counter()
    per_rank = []
    for rank in range(world):
        s = LengthGroupedBatches(lengths, 8, seed=5, rank=rank, world=world)
        s.set_epoch(2)
        batches = list(s)
        per_rank.append(len(batches))
        assert len(batches) == len(s)
        for b in batches:
            seen.update(b)
    assert set(seen) == set(range(1003))
    if world == 1:
        assert all(v == 1 for v in seen.values())
    assert len(set(per_rank)) == 1  # every rank takes the same number of steps


def test_length_grouping_reduces_padding_and_epochs_differ():
    import random

    rng = random.Random(0)
    lengths = [rng.randint(5, 120) for _ in range(2000)]
    s = LengthGroupedBatches(lengths, 32, seed=1)
    grouped = s.all_batches()
    waste = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in grouped)
    idx = list(range(2000))
    rng.shuffle(idx)
    rand = [idx[i : i + 32] for i in range(0, 2000, 32)]
    waste_rand = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in rand)
    assert waste < waste_rand / 5
    s.set_epoch(1)
    assert s.all_batches() != grouped


def test_sorted_batches_cover_every_row_once_within_both_bounds():
    import random

    from bioner.data.batching import sorted_batches

    rng = random.Random(0)
    lengths = [rng.randint(3, 120) for _ in range(500)] + [600]  # a row that fills the budget alone
    batches = sorted_batches(lengths, batch_size=64, max_tokens=1024)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert batches[0] == [500]  # longest first, alone: two such rows exceed the budget
    for b in batches:
        assert len(b) <= 64
        assert [lengths[i] for i in b] == sorted((lengths[i] for i in b), reverse=True)
        if len(b) > 1:
            assert len(b) * max(lengths[i] for i in b) <= 1024
    # without a token budget: fixed-size batches of the sorted rows
    plain = sorted_batches(lengths, batch_size=64)
    assert [len(b) for b in plain] == [64] * 7 + [53]
