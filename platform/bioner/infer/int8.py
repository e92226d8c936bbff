"""int8 inference on a CPU: the NER forward (encoder + token head) exported to ONNX and quantised
dynamically by ONNX Runtime (int8 weights; activations quantised per batch, as they come).

Chosen over torch's dynamic quantisation (torch.ao, which torch marks deprecated): faster at the same
products kept fp32 and closer to fp32 (per-channel weight scales); the comparison and the accuracy on
trained models are in experiments/benchmarks/README.md, "int8 inference: accuracy on trained models".
The quantised graph is slow to build, so it is built once per weights file and kept in $BIONER_CACHE
(default ~/.cache/bioner) as `ner.int8.<recipe>.<digest>.onnx`.
Only the NER head, which `bioner predict` and the served model use, runs in int8; the MRC head of
`bioner evaluate` stays fp32.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from ..data.batch_types import EncoderInputs
from ..errors import BionerError
from ..model import WEIGHTS_FILE, BioNERModel

PRECISIONS = ("auto", "fp32", "int8")
# What `auto` means on a CPU: int8 held the accuracy bar on trained models (experiments/benchmarks/README.md,
# "int8 inference: accuracy on trained models").
CPU_DEFAULT = "int8"
CACHE_ENV = "BIONER_CACHE"
# Left in fp32: each layer's second feed-forward product (BERT's `layer.N/output/dense`). Its input,
# the GELU of the intermediate layer, has a few large outlier channels that one per-tensor activation
# scale clips. Keeping these in fp32, a sixth of the products, is what brings int8's entities to the
# accuracy bar (experiments/benchmarks/README.md, "int8 inference: accuracy on trained models").
FP32_NODES = re.compile(r"layer\.\d+/output/dense/MatMul")
RECIPE = "v2"  # in the cache file's name: a graph quantised by an earlier recipe is not reused


class _NerForward(torch.nn.Module):
    """The exported graph: (input_ids, attention_mask) -> NER logits."""

    def __init__(self, model: BioNERModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model.ner_logits({"input_ids": input_ids, "attention_mask": attention_mask})


def weights_digest(model_dir: Path) -> str:
    h = hashlib.sha256()
    with open(model_dir / WEIGHTS_FILE, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def int8_path(model_dir: Path) -> Path:
    """Where the quantised graph of this folder's weights lives (model folders may be read-only, or
    a temporary download of an MLflow model: the cache outlives both)."""
    cache = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "bioner")
    return cache / f"ner.int8.{RECIPE}.{weights_digest(model_dir)}.onnx"


def build_int8(model: BioNERModel, path: Path) -> Path:
    """Export the NER forward to ONNX and quantise it dynamically to int8 (atomic: a half-written
    file never has the final name)."""
    import onnx  # lazy (platform/README.md)
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    ids = torch.ones((2, 8), dtype=torch.long)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        fp32 = Path(tmp) / "ner.onnx"
        with warnings.catch_warnings():
            # The tracer notes that transformers' mask helpers compare shapes in Python: constant for
            # our inputs (the attention mask always spans the sequence), so nothing a user can act on.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            # Negative indices would break the exported aten::index; the mask helpers index by aranges (never negative).
            warnings.filterwarnings(
                "ignore", message="Exporting aten::index operator of advanced indexing", category=UserWarning
            )
            # The TorchScript exporter is chosen on purpose (dynamo=False): its deprecation notes are for
            # the code that calls it, nothing a user of bioner can act on.
            warnings.filterwarnings(
                "ignore", message="You are using the legacy TorchScript-based ONNX export", category=DeprecationWarning
            )
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
            _export(model, ids, fp32)
        part = Path(tmp) / "ner.int8.onnx"
        root = logging.getLogger()
        level, root.level = root.level, logging.ERROR  # quiet its generic advice to pre-process the graph first
        try:
            keep = [n.name for n in onnx.load(str(fp32)).graph.node if FP32_NODES.search(n.name)]
            quantize_dynamic(str(fp32), str(part), weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=keep)
        finally:
            root.level = level
        part.replace(path)
    return path


def _export(model: BioNERModel, ids: torch.Tensor, fp32: Path) -> None:
    torch.onnx.export(
        _NerForward(model),
        (ids, torch.ones_like(ids)),
        str(fp32),
        input_names=["input_ids", "attention_mask"],
        output_names=["logits"],
        opset_version=17,
        dynamo=False,
        dynamic_axes={
            "input_ids": {0: "batch", 1: "length"},
            "attention_mask": {0: "batch", 1: "length"},
            "logits": {0: "batch", 1: "length"},
        },
    )


class Int8Ner:
    """Callable like `BioNERModel.ner_logits` on a CPU batch, answered by ONNX Runtime in int8."""

    def __init__(self, model: BioNERModel, model_dir: Path, threads: int | None = None):
        import onnxruntime as ort  # lazy (platform/README.md)

        path = int8_path(model_dir)
        if not path.is_file():
            build_int8(model, path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # a damaged cache file: ONNX Runtime raises its own exception types
            raise BionerError(
                f"{path}: not a loadable int8 model ({str(e).splitlines()[0][:200]}); delete it to rebuild"
            ) from None

    def __call__(self, batch: EncoderInputs) -> torch.Tensor:
        feeds = {"input_ids": batch["input_ids"].numpy(), "attention_mask": batch["attention_mask"].numpy()}
        return torch.from_numpy(np.asarray(self.session.run(None, feeds)[0]))


def resolve_precision(precision: str, device: torch.device) -> str:
    """fp32 or int8: `auto` is int8 on a CPU (CPU_DEFAULT) and fp32 on a GPU."""
    if precision not in PRECISIONS:
        raise BionerError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return CPU_DEFAULT if device.type == "cpu" else "fp32"
    if precision == "int8" and device.type != "cpu":
        raise BionerError("precision int8 runs on a CPU; on a GPU use fp32")
    return precision
