"""Benchmark plumbing: warm-up excluded, medians over blocks."""

from bioner.bench.measure import blocks, summarise


def test_blocks_skip_warmup_and_cut_repeats():
    steps = [(32, 1000, 1200, 10.0)] * 2 + [(32, 900, 1000, 1.0)] * 6
    b = blocks(steps, skip=2, per_block=3, repeats=2)
    assert [x["seconds"] for x in b] == [3.0, 3.0]  # the two slow warm-up steps are excluded
    s = summarise(b)
    assert s["sentences_per_s"] == 32.0 and s["tokens_per_s"] == 900.0
    assert abs(s["padding_fraction"] - 0.1) < 1e-9
