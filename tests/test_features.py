import collections

import pytest

from bioner.data.batching import LengthGroupedBatches, mrc_batch, mrc_rows, ner_batch
from bioner.data.features import IGNORE, FeatureBuilder, make_windows
from bioner.data.queries import Queries

LABELS = ["O", "B-Disease", "I-Disease", "B-Gene", "I-Gene"]
TEXTS = {"Disease": {"wikipedia": "w", "annotation": "disease query", "dictionary": "d"},
         "Gene": {"wikipedia": "w", "annotation": "gene query", "dictionary": "d"}}


def test_ner_labels_sit_on_first_pieces(minilm_tokenizer):
    fb = FeatureBuilder(minilm_tokenizer, LABELS, 64)
    words = ["adenomatous", "polyposis", "of", "BRCA1"]
    tags = ["B-Disease", "I-Disease", "O", "B-Gene"]
    enc = fb.encode([words], [tags])
    ids, labels, first = enc.ner_ids[0], enc.ner_labels[0], enc.first_pos[0]
    assert ids[0] == minilm_tokenizer.cls_token_id and ids[-1] == minilm_tokenizer.sep_token_id
    assert [labels[p] for p in first] == [1, 2, 0, 3]
    assert sum(l != IGNORE for l in labels) == 4  # continuation pieces and specials ignored
    assert minilm_tokenizer.decode(ids[first[0]:first[1]]).replace(" ", "") == "adenomatous"


def test_mrc_input_targets_and_masks(minilm_tokenizer):
    q = Queries(TEXTS, "annotation")
    fb = FeatureBuilder(minilm_tokenizer, LABELS, 64, q, ["Disease", "Gene"])
    words = ["the", "adenomatous", "polyposis", "coli", "and", "BRCA1"]
    tags = ["O", "B-Disease", "I-Disease", "I-Disease", "O", "B-Gene"]
    enc = fb.encode([words], [tags], mrc=True)
    assert len(enc.mrc_ids) == 2 and enc.mrc_of == [[0, 1]] and enc.mrc_entity_type == [0, 1]
    cls, sep = minilm_tokenizer.cls_token_id, minilm_tokenizer.sep_token_id
    qids = minilm_tokenizer("disease query", add_special_tokens=False)["input_ids"]
    d = 0  # row of (window 0, Disease)
    assert enc.mrc_ids[d][: len(qids) + 2] == [cls] + qids + [sep] and enc.mrc_ids[d][-1] == sep
    off = enc.mrc_offset[d]
    pos = [p - 1 + off for p in enc.first_pos[0]]  # first pieces of words in the MRC input
    assert [enc.mrc_start[d][p] for p in pos] == [0, 1, 0, 0, 0, 0]
    assert [enc.mrc_end[d][p] for p in pos] == [0, 0, 0, 1, 0, 0]
    g = 1  # Gene row
    assert [enc.mrc_start[g][p] for p in pos] == [0, 0, 0, 0, 0, 1]
    assert [enc.mrc_end[g][p] for p in pos] == [0, 0, 0, 0, 0, 1]
    mask = enc.mrc_mask[d]
    assert sum(mask) == len(words) and all(mask[i] == 0 for i in range(off))  # query and [CLS] masked
    assert mask[-1] == 0  # final [SEP]
    assert enc.mrc_token_types[d][:off] == [0] * off and set(enc.mrc_token_types[d][off:]) == {1}


def test_none_source_builds_cls_passage_sep(minilm_tokenizer):
    fb = FeatureBuilder(minilm_tokenizer, LABELS, 64, Queries(TEXTS, "none"), ["Disease"])
    enc = fb.encode([["flu"]], [["B-Disease"]], mrc=True)
    assert enc.mrc_ids[0] == enc.ner_ids[0] and enc.mrc_offset[0] == 1


def test_windows_cover_every_word_once():
    for n_pieces, budget in ([[1] * 40, 10], [[3, 1, 7, 2, 2, 9, 1, 1, 4] * 5, 12], [[20, 1, 1], 8]):
        ws = make_windows(n_pieces, budget)
        owned = [j for w in ws for j in range(w.own_start, w.own_end)]
        assert owned == list(range(len(n_pieces)))
        for w in ws:
            assert w.start <= w.own_start <= w.own_end <= w.end
            assert sum(min(k, budget) for k in n_pieces[w.start : w.end]) <= budget or w.end - w.start == 1
    assert make_windows([1] * 5, 10) == [make_windows([1] * 5, 10)[0]] and make_windows([1] * 5, 10)[0].end == 5


def test_long_sentence_is_windowed_with_labels_kept(minilm_tokenizer):
    fb = FeatureBuilder(minilm_tokenizer, LABELS, 16)  # 14 pieces per window
    words = [f"w{i}" for i in range(40)]
    tags = ["B-Disease" if i % 7 == 0 else "O" for i in range(40)]
    enc = fb.encode([words], [tags])
    assert len(enc) > 1 and all(len(x) <= 16 for x in enc.ner_ids)
    seen = {}
    for k, w in enumerate(enc.window):
        for j in range(w.own_start, w.own_end):
            seen[j] = enc.ner_labels[k][enc.first_pos[k][j - w.start]]
    assert [seen[j] for j in range(40)] == [1 if i % 7 == 0 else 0 for i in range(40)]


def test_dropped_characters_still_get_a_position(minilm_tokenizer):
    fb = FeatureBuilder(minilm_tokenizer, LABELS, 32)
    enc = fb.encode([["a", "\u200b", "b"]], [["O", "O", "O"]])
    assert len(enc.first_pos[0]) == 3


def test_batches_pad_to_the_longest_in_batch_not_max_length(minilm_tokenizer):
    q = Queries(TEXTS, "annotation")
    fb = FeatureBuilder(minilm_tokenizer, LABELS, 256, q, ["Disease", "Gene"])
    enc = fb.encode([["a"] * 3, ["b"] * 9], [["O"] * 3, ["O"] * 9], mrc=True)
    nb = ner_batch(enc, [0, 1], 0)
    assert nb["input_ids"].shape == (2, 11) and nb["attention_mask"].sum() == 5 + 11
    mb = mrc_batch(enc, mrc_rows(enc, [0, 1]), 0)
    assert mb["input_ids"].shape[0] == 4 and mb["input_ids"].shape[1] == max(len(x) for x in enc.mrc_ids)


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
