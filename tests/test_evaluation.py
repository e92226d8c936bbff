import random

import numpy as np
import pytest
from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.scheme import IOB2

from bioner.data.tags import spans, spans_to_tags
from bioner.infer.metrics import decode_mrc, paired_bootstrap, score, sentence_counts


def test_spans_strict_iob2():
    tags = ["B-D", "I-D", "O", "I-D", "B-D", "B-G", "I-G", "I-D"]
    assert spans(tags) == [("D", 0, 2), ("D", 4, 5), ("G", 5, 7)]


def _random_tags(rng, n):
    return [rng.choice(["O", "O", "O", "B-D", "I-D", "B-G", "I-G"]) for _ in range(n)]


@pytest.mark.parametrize("seed", range(5))
def test_our_f1_equals_seqeval_strict(seed):
    rng = random.Random(seed)
    gold = [_random_tags(rng, rng.randint(1, 30)) for _ in range(200)]
    pred = [[t if rng.random() < 0.7 else rng.choice(["O", "B-D", "I-D", "B-G", "I-G"]) for t in g] for g in gold]
    ours = score(gold, pred, ["D", "G"])
    kw = dict(mode="strict", scheme=IOB2)
    assert ours["f1"] == pytest.approx(f1_score(gold, pred, **kw))
    assert ours["precision"] == pytest.approx(precision_score(gold, pred, **kw))
    assert ours["recall"] == pytest.approx(recall_score(gold, pred, **kw))
    per = f1_score(gold, pred, average=None, **kw)
    assert [ours["f1_D"], ours["f1_G"]] == pytest.approx(list(per))


def test_decode_mrc_pairs_each_start_with_the_nearest_end():
    s = [0.9, 0.1, 0.8, 0.1, 0.7, 0.1]
    e = [0.1, 0.9, 0.1, 0.1, 0.1, 0.9]
    assert decode_mrc(s, e) == [(0, 1), (2, 5)]  # start 4 lies inside (2, 5): no overlap
    assert decode_mrc([0.9, 0.9], [0.1, 0.1]) == []
    assert decode_mrc([0.6], [0.6]) == [(0, 0)]


def test_spans_to_tags_round_trip():
    assert spans_to_tags(5, [("D", 0, 1), ("G", 3, 3), ("D", 1, 2)]) == ["B-D", "I-D", "O", "B-G", "O"]


def test_bootstrap_p_value_behaves():
    rng = random.Random(0)
    gold = [_random_tags(rng, 20) for _ in range(300)]
    good = [[t if rng.random() < 0.95 else "O" for t in g] for g in gold]
    bad = [[t if rng.random() < 0.6 else "O" for t in g] for g in gold]
    cg, cb = sentence_counts(gold, good, ["D", "G"]), sentence_counts(gold, bad, ["D", "G"])
    f_a, f_b, p = paired_bootstrap(cb, cg, 1000, seed=1)
    assert f_b > f_a and p < 0.01
    _, _, p_same = paired_bootstrap(cg, cg.copy(), 1000, seed=1)
    assert p_same == 1.0  # identical systems: b is never better
    assert isinstance(cg, np.ndarray) and cg.shape == (300, 2, 3)
