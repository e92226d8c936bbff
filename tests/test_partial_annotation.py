"""Many corpora, many types: composite specs, the partial-annotation NER loss, sampled MRC types,
per-corpus scoring, and extending a model's label set."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from bioner.config import TrainConfig
from bioner.data.batching import mrc_batch, mrc_rows, ner_batch
from bioner.data.features import FeatureBuilder
from bioner.data.iob import read_split
from bioner.data.specs import load_spec
from bioner.errors import ConfigError
from bioner.infer.evaluate import restrict
from bioner.infer.metrics import score
from bioner.model import build_model, mrc_loss, ner_loss
from bioner.train.step import Step
from helpers import write_corpus, write_spec

LABELS = ["O", "B-Disease", "I-Disease", "B-Chemical", "I-Chemical"]


@pytest.fixture
def two_corpora(tmp_path):
    """A disease corpus and a chemical corpus, each silent about the other type, and their composite."""
    write_corpus(
        tmp_path / "d",
        {
            "train": "flu\tB-Disease\naspirin\tO\n\ngout\tB-Disease\nx\tO\n",
            "devel": "a\tO\n",
            "test": "flu\tB-Disease\naspirin\tO\n",
        },
    )
    write_corpus(
        tmp_path / "c",
        {"train": "aspirin\tB-Chemical\nflu\tO\n", "devel": "a\tO\n", "test": "aspirin\tB-Chemical\nflu\tO\n"},
    )
    d = write_spec(tmp_path / "dis.yaml", "d", types=("Disease",), name="dis")
    c = write_spec(tmp_path / "chem.yaml", "c", types=("Chemical",), name="chem")
    both = tmp_path / "both.yaml"
    both.write_text("name: both\ncorpora: [dis.yaml, chem.yaml]\n")
    return d, c, both


def test_a_composite_spec_is_the_union_of_its_members_types(two_corpora, tmp_path):
    _, _, both = two_corpora
    spec = load_spec(both)
    assert [m.name for m in spec.members] == ["dis", "chem"]
    assert spec.types == ["Disease", "Chemical"] and spec.labels == LABELS
    train = read_split(spec, "train")
    assert train.corpus == ["dis", "dis", "chem"] and train.annotated == [("Disease",)] * 2 + [("Chemical",)]
    # two disease corpora share the type
    write_corpus(tmp_path / "d2", {s: "gout\tB-Disease\n" for s in ("train", "devel", "test")})
    write_spec(tmp_path / "dis2.yaml", "d2", types=("Disease",), name="dis2")
    (tmp_path / "diseases.yaml").write_text("name: diseases\ncorpora: [dis.yaml, dis2.yaml]\n")
    assert load_spec(tmp_path / "diseases.yaml").types == ["Disease"]
    (tmp_path / "loop.yaml").write_text("name: loop\ncorpora: [loop.yaml, dis.yaml]\n")
    with pytest.raises(ConfigError, match="includes the spec itself"):
        load_spec(tmp_path / "loop.yaml")


def test_datasets_check_validates_every_member(two_corpora):
    d, c, both = two_corpora
    with open(c.parent / "c" / "test.tsv", "a") as f:
        f.write("bad line\n")
    r = subprocess.run(
        [sys.executable, "-m", "bioner.cli", "datasets", "check", str(both)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and r.stderr.strip().startswith(str(c.parent / "c" / "test.tsv") + ":3:")


def test_the_partial_loss_of_one_corpus_is_the_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(3, 7, len(LABELS))
    labels = torch.randint(0, len(LABELS), (3, 7))
    labels[0, :2] = -100
    only_o = torch.zeros(3, len(LABELS), dtype=torch.bool)
    only_o[:, 0] = True
    ce = F.cross_entropy(logits.reshape(-1, len(LABELS)), labels.reshape(-1), ignore_index=-100)
    assert ner_loss(logits, labels, o_allowed=only_o) == pytest.approx(float(ce), rel=1e-6, abs=1e-7)
    assert ner_loss(logits, labels) == pytest.approx(float(ce), rel=1e-6)


def test_an_unannotated_type_labelled_o_costs_nothing_for_that_type():
    """The model says B-Chemical with certainty on a token labelled O. In the disease corpus (which
    does not annotate chemicals) that costs nothing; in a corpus that annotates chemicals it costs a lot."""
    logits = torch.full((2, 1, len(LABELS)), -30.0)
    logits[:, 0, 3] = 30.0  # B-Chemical
    labels = torch.zeros((2, 1), dtype=torch.long)  # gold O
    allowed = torch.zeros((2, len(LABELS)), dtype=torch.bool)
    allowed[:, 0] = True
    allowed[0, 3:] = True  # row 0: a disease-only corpus, chemicals unannotated
    per_row = [float(ner_loss(logits[i : i + 1], labels[i : i + 1], o_allowed=allowed[i : i + 1])) for i in range(2)]
    assert per_row[0] < 1e-6 and per_row[1] > 50


def test_features_ask_a_sentence_only_about_its_corpus_types(two_corpora, minilm_tokenizer):
    spec = load_spec(two_corpora[2])
    train = read_split(spec, "train")
    data_cfg = TrainConfig(dataset=str(spec.path), query_source="annotation")
    from bioner.data.job import load_job_data

    fb = FeatureBuilder(minilm_tokenizer, spec.labels, 64, load_job_data(data_cfg).queries, spec.types)
    enc = fb.encode(train.tokens, train.tags, mrc=True, annotated=train.annotated)
    assert [len(window.mrc_rows) for window in enc.windows] == [1, 1, 1]
    types = [spec.types[enc.mrc[r].entity_type] for r in mrc_rows(enc, [0, 1, 2])]
    assert types == ["Disease", "Disease", "Chemical"]
    assert enc.windows[0].o_allowed == (0, 3, 4) and enc.windows[2].o_allowed == (0, 1, 2) and enc.partial
    allowed = ner_batch(enc, [0, 2], 0)["o_allowed"].tolist()
    assert allowed == [[True, False, False, True, True], [True, True, True, False, False]]
    single = fb.encode(train.tokens, train.tags, mrc=True)
    assert [len(window.mrc_rows) for window in single.windows] == [2, 2, 2] and not single.partial
    assert "o_allowed" not in ner_batch(single, [0], 0)


@pytest.fixture
def three_types(tmp_path, minilm_tokenizer, tiny_bert):
    rows = "flu\tB-A\naspirin\tB-B\nkinase\tB-C\nx\tO\n\nfever\tB-A\nsalt\tB-B\ny\tO\n"
    write_corpus(tmp_path / "c3", {"train": rows, "devel": rows, "test": rows})
    spec = load_spec(write_spec(tmp_path / "three.yaml", "c3", types=("A", "B", "C"), name="three"))
    train = read_split(spec, "train")
    from bioner.data.job import load_job_data

    cfg = TrainConfig(
        dataset=str(spec.path), encoder=tiny_bert, query_source="annotation", mrc_types_per_sentence=1, seed=5
    )
    fb = FeatureBuilder(minilm_tokenizer, spec.labels, 64, load_job_data(cfg).queries, spec.types)
    enc = fb.encode(train.tokens, train.tags, mrc=True, annotated=train.annotated)
    torch.manual_seed(0)
    model = build_model(tiny_bert, len(spec.labels), dropout=0.0).eval()
    return cfg, enc, model


def test_the_sampled_mrc_loss_has_the_full_loss_as_its_mean(three_types):
    cfg, enc, model = three_types
    rows = mrc_rows(enc, [0])
    with torch.no_grad():
        full_batch = mrc_batch(enc, rows, 0)
        full = float(mrc_loss(*model.mrc_logits(full_batch), full_batch))
        denom = full_batch["label_mask"].sum()
        drawn = []
        for r in rows:  # k = 1 of 3 types: each drawn with probability 1/3, weighted 3
            b = mrc_batch(enc, [r], 0, weights=[3.0])
            b["loss_denom"] = denom
            drawn.append(float(mrc_loss(*model.mrc_logits(b), b)))
    assert sum(drawn) / 3 == pytest.approx(full, rel=1e-5)
    assert max(drawn) - min(drawn) > 1e-3 * full  # the draws differ: the mean is not trivially equal


def test_step_draws_k_types_per_sentence_and_epoch_seeded(three_types):
    cfg, enc, _ = three_types
    step = Step(None, [], None, None, cfg, torch.device("cpu"), enc, 0)
    seen = {}
    for epoch in range(300):
        step.set_epoch(epoch)
        plan = step.mrc_plan([0, 1])
        assert len(plan) == 2 and set(plan.values()) == {3.0}  # one of 3 types a sentence, weight 3
        for r in plan:
            seen[r] = seen.get(r, 0) + 1
        assert plan == step.mrc_plan([0, 1])  # same epoch, same draw
    assert len(seen) == 6 and all(70 <= n <= 130 for n in seen.values())  # about 100 of 300 each


def test_a_corpus_is_scored_only_on_the_types_it_annotates():
    gold = [["B-Disease", "O"], ["B-Chemical", "O"]]
    pred = [["B-Disease", "B-Chemical"], ["B-Chemical", "B-Disease"]]
    kept = restrict(pred, [("Disease",), ("Chemical",)])
    assert kept == [["B-Disease", "O"], ["B-Chemical", "O"]]
    assert score(gold, kept, ["Disease", "Chemical"])["f1"] == 1.0


def test_extending_a_head_keeps_the_old_rows_bit_identical(tiny_bert):
    torch.manual_seed(1)
    model = build_model(tiny_bert, 3)
    old_w, old_b = model.ner_head.weight.detach().clone(), model.ner_head.bias.detach().clone()
    model.extend_labels(["O", "B-Disease", "I-Disease"], LABELS)
    assert model.ner_head.out_features == 5
    assert torch.equal(model.ner_head.weight[:3], old_w) and torch.equal(model.ner_head.bias[:3], old_b)
    assert not torch.equal(model.ner_head.weight[3:], torch.zeros_like(model.ner_head.weight[3:]))
    with pytest.raises(ValueError, match="lacks"):
        model.extend_labels(LABELS, ["O", "B-X", "I-X"])


def test_random_draws_do_not_leak_between_seeds(three_types):
    cfg, enc, _ = three_types
    a = Step(None, [], None, None, cfg, torch.device("cpu"), enc, 0)
    b = Step(None, [], None, None, cfg.train_config(seed=6), torch.device("cpu"), enc, 0)
    draws = [
        (sorted(a.mrc_plan([0, 1])), sorted(b.mrc_plan([0, 1])))
        for e in range(20)
        if not a.set_epoch(e) and not b.set_epoch(e)
    ]
    assert any(x != y for x, y in draws)
    random.seed(0)  # the draw never touches the global generator
    before = random.random()
    random.seed(0)
    a.mrc_plan([0, 1])
    assert random.random() == before
