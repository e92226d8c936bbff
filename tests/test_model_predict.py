import json

import pytest
import torch

from bioner.data.batching import mrc_batch, mrc_rows, ner_batch
from bioner.data.features import FeatureBuilder
from bioner.data.queries import Queries
from bioner.infer.tagger import Tagger
from bioner.infer.text import split_words
from bioner.model import ModelMeta, build_model, load_model, mrc_loss, ner_loss, read_meta, save_model

LABELS = ["O", "B-Disease", "I-Disease"]
TEXTS = {"Disease": {"wikipedia": "w", "annotation": "a disease entity", "dictionary": "d"}}


@pytest.fixture(scope="module")
def model_dir(tiny_bert, minilm_tokenizer, tmp_path_factory):
    torch.manual_seed(1)
    m = build_model(tiny_bert, len(LABELS))
    with torch.no_grad():  # make the random heads decisive so predictions vary by token
        m.ner_head.weight.mul_(50)
        m.start_head.weight.mul_(50)
        m.end_head.weight.mul_(50)
    meta = ModelMeta(
        labels=LABELS,
        types=["Disease"],
        max_length=24,
        multitask=True,
        queries=Queries(TEXTS, "annotation").to_dict(),
        dataset="toy",
        encoder=tiny_bert,
    )
    return save_model(m, minilm_tokenizer, tmp_path_factory.mktemp("m") / "model", meta)


def test_saved_model_is_safetensors_and_json_and_reloads_identically(model_dir, minilm_tokenizer):
    files = sorted(p.name for p in model_dir.iterdir())
    assert "model.safetensors" in files and "bioner.json" in files and "config.json" in files
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    m1, tok, meta = load_model(model_dir)
    m2, _, _ = load_model(model_dir)
    fb = FeatureBuilder(tok, LABELS, 24)
    enc = fb.encode([["fever", "and", "cough"]])
    b = ner_batch(enc, [0], tok.pad_token_id)
    del b["labels"]
    with torch.no_grad():
        assert torch.equal(m1.ner_logits(b), m2.ner_logits(b))
    assert json.loads((model_dir / "bioner.json").read_text())["labels"] == LABELS


def test_bioner_json_is_model_meta_with_its_version_and_reads_back(model_dir):
    raw = json.loads((model_dir / "bioner.json").read_text())
    # the keys, in the order models have always been saved with, every one written
    assert list(raw) == [
        "format_version",
        "num_labels",
        "labels",
        "types",
        "dataset",
        "encoder",
        "max_length",
        "dropout",
        "multitask",
        "queries",
        "corpora",
    ]
    assert raw["format_version"] == 2 and raw["num_labels"] == 3 and raw["corpora"] == []
    meta = read_meta(model_dir)
    assert meta == ModelMeta.from_json(raw) and meta.to_json() == raw
    assert (meta.labels, meta.max_length, meta.multitask, meta.dropout) == (LABELS, 24, True, 0.1)
    assert meta.corpus_names == ["toy"] and meta["labels"] == LABELS  # key access: readers not yet on attributes


@pytest.mark.parametrize(
    "old",
    [
        # as models were saved before ModelMeta: format_version 1, no corpora (models from before composite datasets)
        {
            "format_version": 1,
            "num_labels": 3,
            "labels": LABELS,
            "types": ["Disease"],
            "dataset": "toy",
            "encoder": "minilm",
            "max_length": 24,
            "dropout": 0.1,
            "multitask": True,
            "queries": Queries(TEXTS, "annotation").to_dict(),
        },
        # a hand-written one: no version, only the required keys, and a key this version does not know
        {"num_labels": 3, "labels": LABELS, "types": ["Disease"], "max_length": 24, "note": "kept by hand"},
    ],
    ids=["format-1", "no-version"],
)
def test_a_model_saved_in_the_old_dict_shape_still_loads_and_tags_the_same(model_dir, tmp_path, old):
    import shutil

    folder = shutil.copytree(model_dir, tmp_path / "old")
    (folder / "bioner.json").write_text(json.dumps(old, indent=2))
    _, _, meta = load_model(folder)
    assert (meta.labels, meta.types, meta.max_length, meta.num_labels) == (LABELS, ["Disease"], 24, 3)
    assert meta.corpora == [] and meta.dropout == 0.1
    if "format_version" in old:
        assert meta.corpus_names == ["toy"] and meta.encoder == "minilm" and meta.queries == old["queries"]
    else:  # the optional keys take their defaults
        assert (meta.dataset, meta.encoder, meta.multitask, meta.queries) == (None, None, False, None)
        assert meta.corpus_names == []
    sentences = [["Familial", "breast", "cancer", "."], [f"w{i}" for i in range(40)]]
    old_tagger, new_tagger = Tagger.load(folder), Tagger.load(model_dir)
    assert old_tagger.tag(sentences) == new_tagger.tag(sentences)
    assert old_tagger.has_mrc == ("format_version" in old)
    model, tok, _ = load_model(folder)  # saved again, it is written in the current format
    resaved = save_model(model, tok, tmp_path / "resaved", meta)
    assert read_meta(resaved) == meta and json.loads((resaved / "bioner.json").read_text())["format_version"] == 2


def test_a_model_folder_without_config_json_names_the_file_not_the_encoder(model_dir, tmp_path):
    """Trained on (`encoder=`) or loaded, a folder that lost its config.json says so in one line; it was
    reported as an encoder that cannot load ("should have a `model_type` key")."""
    import shutil

    from bioner.errors import BionerError
    from bioner.model import check_encoder

    folder = shutil.copytree(model_dir, tmp_path / "no-config")
    (folder / "config.json").unlink()
    with pytest.raises(BionerError) as e:
        check_encoder(str(folder))
    assert str(e.value) == (
        f"encoder {str(folder)!r}: {folder / 'config.json'} missing (an encoder folder holds the "
        "encoder's config.json and its tokenizer files)"
    )
    with pytest.raises(BionerError) as e:
        load_model(folder)
    assert str(e.value) == (
        f"{folder}: config.json missing: a model folder holds the encoder's config.json and its tokenizer"
    )  # and no word of [UNK]: the tokenizer is there


def test_single_task_loss_is_alpha_times_ce_and_freezes_mrc_heads(tiny_bert, minilm_tokenizer):
    torch.manual_seed(0)
    m = build_model(tiny_bert, 3).eval()
    m.freeze_unused_heads(alpha=1.0, beta=0.0)
    assert not m.start_head.weight.requires_grad and m.ner_head.weight.requires_grad
    q = Queries(TEXTS, "annotation")
    fb = FeatureBuilder(minilm_tokenizer, LABELS, 32, q, ["Disease"])
    enc = fb.encode([["flu", "is", "bad"]], [["B-Disease", "O", "O"]], mrc=True)
    ner = ner_batch(enc, [0], 0)
    mrc = mrc_batch(enc, mrc_rows(enc, [0]), 0)
    total, l_ner, l_mrc = m(ner, None, 0.5, 0.0)
    assert total.item() == pytest.approx(0.5 * l_ner.item()) and l_mrc.item() == 0
    total2, l_ner2, l_mrc2 = m(ner, mrc, 0.5, 0.25)
    assert l_mrc2.item() > 0 and total2.item() == pytest.approx(0.5 * l_ner2.item() + 0.25 * l_mrc2.item(), rel=1e-5)


def test_batched_windowed_inference_equals_one_by_one(model_dir):
    tagger = Tagger.load(model_dir, batch_size=4)
    sents = [["acute", "myeloid", "leukemia"] * k for k in (1, 2, 5, 9, 14)] + [["x"], ["the", "BRCA1", "gene"] * 7]
    batched = tagger.tag(sents)
    single = [tagger.tag([s])[0] for s in sents]
    assert batched == single
    assert [len(t) for t in batched] == [len(s) for s in sents]  # every word gets a prediction
    assert any(len(s) * 2 > 22 for s in sents)  # some sentences really were windowed (max_length 24)
    assert len({t for s in batched for t in s}) > 1
    mrc_b = tagger.mrc_tags(sents)
    assert mrc_b == [tagger.mrc_tags([s])[0] for s in sents]


def test_entities_have_character_offsets_into_the_input(model_dir):
    tagger = Tagger.load(model_dir)
    texts = [
        "Familial adenomatous polyposis (FAP) is caused by APC mutations.",
        "",
        "   ",
        "Ca\u00b2\u207a-ATPase \u0434\u0435\u0444\u0438\u0446\u0438\u0442 \u75be\u75c5 \x00\x07 test",
        "word " * 400,
    ]
    out = tagger.entities(texts)
    assert len(out) == len(texts) and out[1] == [] and out[2] == []
    n = 0
    for t, ents in zip(texts, out, strict=True):
        for e in ents:
            assert t[e["start"] : e["end"]] == e["text"] and e["type"] == "Disease"
            n += 1
    assert n > 0


def test_split_words_offsets():
    text = "IL-2 (human) αβ"
    words = ["IL", "-", "2", "(", "human", ")", "αβ"]
    assert [(word, text[a:b]) for word, a, b in split_words(text)] == [(word, word) for word in words]


def test_exported_token_classifier_has_our_logits(model_dir, tmp_path):
    from transformers import AutoModelForTokenClassification

    from bioner.bench.hf import export_token_classifier
    from bioner.model import load_model

    ours, tok, meta = load_model(model_dir)
    hf = AutoModelForTokenClassification.from_pretrained(export_token_classifier(model_dir, tmp_path / "hf")).eval()
    assert hf.config.id2label == dict(enumerate(meta.labels))
    batch = tok(["Germline mutations in BRCA1 cause breast cancer .", "Ataxia"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        a = ours.ner_logits(dict(batch))
        b = hf(**batch).logits
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("source, passes", [("none", 1), ("annotation", 2)])
def test_one_encoder_pass_when_the_mrc_input_is_the_ner_input(tiny_bert, minilm_tokenizer, source, passes):
    # Query source `none`: [CLS] p [SEP] for both tasks, so the step encodes once; the losses are
    # those of two separate passes (dropout off).
    torch.manual_seed(0)
    m = build_model(tiny_bert, 3).eval()
    fb = FeatureBuilder(minilm_tokenizer, LABELS, 32, Queries(TEXTS, source), ["Disease"])
    sents = [["flu", "is", "bad"], ["no", "disease", "here", "at", "all"], ["cancer"]]
    enc = fb.encode(sents, [["B-Disease", "O", "O"], ["O"] * 5, ["B-Disease"]], mrc=True)
    ner, mrc = ner_batch(enc, [0, 1, 2], 0), mrc_batch(enc, mrc_rows(enc, [0, 1, 2]), 0)
    calls = []
    hook = m.encoder.register_forward_hook(lambda *a: calls.append(1))
    total, l_ner, l_mrc = m(ner, mrc, 1.0, 0.5)
    hook.remove()
    assert len(calls) == passes
    sep_ner = ner_loss(m.ner_logits(ner), ner["labels"])
    sep_mrc = mrc_loss(*m.mrc_logits(mrc), mrc)
    assert l_ner.item() == pytest.approx(sep_ner.item(), rel=1e-5)
    assert l_mrc.item() == pytest.approx(sep_mrc.item(), rel=1e-5) and l_mrc.item() > 0
    assert total.item() == pytest.approx(sep_ner.item() + 0.5 * sep_mrc.item(), rel=1e-5)
