"""int8 inference: the NER forward through ONNX Runtime, built once per weights file, same entities
as fp32 where the model is decisive; the options that choose it."""

from __future__ import annotations

import pytest
import torch

from bioner.errors import BionerError
from bioner.infer.int8 import FP32_NODES, int8_path, resolve_precision
from bioner.infer.tagger import Tagger
from helpers import save_pyfunc, save_random_model

TEXTS = [
    "Familial adenomatous polyposis is a hereditary cancer .",
    "No disease here at all .",
    "",
    "Mutations in BRCA1 cause breast and ovarian cancer in families with hereditary breast cancer .",
]


@pytest.fixture(scope="module")
def decisive_model(tmp_path_factory, tiny_bert):
    """A random model whose head is scaled up: large logit margins, so quantisation noise flips no tag."""
    folder = tmp_path_factory.mktemp("int8") / "model"
    return save_random_model(folder, tiny_bert, max_length=32, seed=6, head_scale=50)


def spans(entities: list[list[dict]]) -> list[list[tuple]]:
    """The entities without their scores: int8 finds the same spans, with probabilities a little off fp32's."""
    return [[(e["text"], e["start"], e["end"], e["type"]) for e in es] for es in entities]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BIONER_CACHE", str(tmp_path / "cache"))


def test_int8_finds_the_entities_fp32_finds_and_is_built_once(decisive_model, tmp_path):
    fp32 = Tagger.load(decisive_model, precision="fp32")
    path = int8_path(decisive_model)
    assert not path.exists()
    int8 = Tagger.load(decisive_model, precision="int8")
    assert (
        path.is_file()
        and path.parent == tmp_path / "cache"
        and path.stat().st_size < 0.5 * (decisive_model / "model.safetensors").stat().st_size
    )
    import onnx

    nodes = onnx.load(str(path)).graph.node
    # fp32 products: attention's own (two activations, never quantised) and each second feed-forward product
    plain = sorted(n.name for n in nodes if n.op_type == "MatMul" and "attention/self/MatMul" not in n.name)
    assert len(plain) == 2 and all(FP32_NODES.search(n) for n in plain)  # the tiny BERT has 2 layers
    assert sum(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for n in nodes) > len(plain)
    ents = spans(fp32.entities(TEXTS))
    assert sum(map(len, ents)) >= 3  # the check below means something
    assert spans(int8.entities(TEXTS)) == ents
    mtime = path.stat().st_mtime_ns
    Tagger.load(decisive_model, precision="int8")
    assert path.stat().st_mtime_ns == mtime  # the second load reuses the quantised graph
    long = " ".join(["polyposis cancer"] * 60)  # windowed: longer than max_length 32
    assert spans(int8.entities([long])) == spans(fp32.entities([long]))


def test_precision_auto_is_int8_on_a_cpu_and_bad_values_are_one_line():
    assert resolve_precision("auto", torch.device("cpu")) == "int8"
    assert resolve_precision("auto", torch.device("cuda")) == "fp32"
    with pytest.raises(BionerError, match="precision 'int4': expected one of auto, fp32, int8"):
        resolve_precision("int4", torch.device("cpu"))
    with pytest.raises(BionerError, match="int8 runs on a CPU"):
        resolve_precision("int8", torch.device("cuda"))


def test_the_pyfunc_takes_its_precision_from_model_config_or_the_environment(decisive_model, tmp_path, monkeypatch):
    import mlflow.pyfunc

    from bioner.tracking.models import MODEL_CONFIG

    save_pyfunc(tmp_path / "m", decisive_model, model_config=MODEL_CONFIG)

    def net(pyf):
        return type(pyf.unwrap_python_model().tagger.ner_logits).__name__

    assert net(mlflow.pyfunc.load_model(str(tmp_path / "m"))) == "Int8Ner"  # auto, on this CPU
    fp32 = mlflow.pyfunc.load_model(str(tmp_path / "m"), model_config={"precision": "fp32"})
    assert net(fp32) == "method"
    monkeypatch.setenv("MLFLOW_PYFUNC_INFERENCE_CONFIG", '{"precision": "fp32"}')  # what `mlflow models serve` can take
    assert net(mlflow.pyfunc.load_model(str(tmp_path / "m"))) == "method"
    monkeypatch.delenv("MLFLOW_PYFUNC_INFERENCE_CONFIG")
    assert spans(mlflow.pyfunc.load_model(str(tmp_path / "m")).predict(TEXTS)) == spans(fp32.predict(TEXTS))
