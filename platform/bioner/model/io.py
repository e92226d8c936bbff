"""A saved model is a folder: the encoder's `config.json`, the tokenizer files, `model.safetensors`
(all weights, heads included) and `bioner.json` (labels, entity types, queries, max length).
Loading it needs no pickle and no network.

Everything a folder declares is checked against everything else before the network is built: a
missing tokenizer file (every word would become [UNK]), a truncated weights file, a bioner.json
whose labels do not fit the head, a config.json whose shapes are not those of the weights (an
edited hidden size would allocate gigabytes before failing). Each is one line naming the file.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from ..errors import BionerError, first_line
from .encoder import drop_pooler, load_encoder, position_limit
from .meta import ModelMeta
from .network import BioNERModel

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

META_FILE = "bioner.json"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
# What a fast tokenizer's save_pretrained writes (load_tokenizer only accepts fast tokenizers).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
MAX_HEADER_BYTES = 100 * 2**20  # a safetensors header is JSON; 100 MiB is far beyond any real model's


def build_model(
    encoder_name: str, num_labels: int, dropout: float = 0.1, trust_remote_code: bool = False
) -> BioNERModel:
    return BioNERModel(load_encoder(encoder_name, trust_remote_code), num_labels, dropout)


def save_model(
    model: BioNERModel, tokenizer: PreTrainedTokenizerBase, out_dir: str | Path, meta: ModelMeta | Mapping[str, Any]
) -> Path:
    """Write config, tokenizer, safetensors weights and bioner.json into `out_dir`. `meta` may be given
    as a dict of ModelMeta's fields, for brevity where a model is saved by hand (tests, benchmarks)."""
    model = getattr(model, "module", model)  # unwrap DDP
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.encoder.config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    content = ModelMeta.of(meta).to_json(num_labels=model.ner_head.out_features)
    (out / META_FILE).write_text(json.dumps(content, indent=2), encoding="utf-8")
    return out


def weight_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape from a safetensors header, after checking that the file holds every
    byte its header describes (a truncated copy fails here, not inside the loader)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        n = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
        if n < 0 or n > min(MAX_HEADER_BYTES, size - 8):
            raise BionerError(f"{path}: truncated or not a safetensors file ({size} bytes)")
        try:
            header = json.loads(f.read(n))
            tensors = {k: v for k, v in header.items() if k != "__metadata__"}
            end = max((int(v["data_offsets"][1]) for v in tensors.values()), default=0)
            shapes = {k: [int(x) for x in v["shape"]] for k, v in tensors.items()}
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            raise BionerError(f"{path}: not a safetensors file (its header is not valid)") from None
    if 8 + n + end > size:
        raise BionerError(f"{path}: truncated: {size} bytes, its header describes {8 + n + end}")
    return shapes


def read_meta(model_dir: str | Path) -> ModelMeta:
    """A model folder's bioner.json (labels, types, corpora, queries, encoder, max length), of any
    format version, checked: labels are O then B-/I- per type, and num_labels is their count."""
    d = Path(model_dir)
    if not (d / META_FILE).is_file():
        raise BionerError(f"{d}: not a bioner model folder (needs {META_FILE} and {WEIGHTS_FILE})")
    try:
        raw = json.loads((d / META_FILE).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise BionerError(f"{d / META_FILE}: not valid JSON ({first_line(e)})") from None
    try:
        n = raw["num_labels"]
        meta = ModelMeta.from_json(raw)
    except (KeyError, TypeError, ValueError) as e:
        raise BionerError(f"{d / META_FILE}: missing or malformed key {first_line(e)}") from None
    labels, types = meta.labels, meta.types
    expected = ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")] if isinstance(types, list) else None
    if labels != expected:
        raise BionerError(f"{d / META_FILE}: labels {labels} are not O, B-/I- for each of the types {types}")
    if n != len(labels):
        raise BionerError(f"{d / META_FILE}: num_labels is {n}, but there are {len(labels)} labels")
    return meta


def check_model_folder(model_dir: str | Path) -> tuple[ModelMeta, PretrainedConfig, dict[str, list[int]]]:
    """Everything in a model folder that can be checked without building the network; returns
    (meta, the encoder's config, the weights' shapes). Each problem is one line."""
    from transformers import AutoConfig  # lazy (platform/README.md)

    d = Path(model_dir)
    if not (d / META_FILE).is_file() or not (d / WEIGHTS_FILE).is_file():
        raise BionerError(f"{d}: not a bioner model folder (needs {META_FILE} and {WEIGHTS_FILE})")
    missing = [f for f in (CONFIG_FILE, *TOKENIZER_FILES) if not (d / f).is_file()]
    if missing:
        why = f"a model folder holds the encoder's {CONFIG_FILE} and its tokenizer"
        if set(missing) & set(TOKENIZER_FILES):
            why += " (without the tokenizer every word would be read as [UNK])"
        raise BionerError(f"{d}: {', '.join(missing)} missing: {why}")
    meta = read_meta(d)
    shapes = weight_shapes(d / WEIGHTS_FILE)
    try:
        config = AutoConfig.from_pretrained(d)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BionerError(f"{d / CONFIG_FILE}: cannot be read ({first_line(e)})") from None
    _check_shapes(d, config, meta, shapes)
    return meta, config, shapes


def _check_shapes(d: Path, config: PretrainedConfig, meta: ModelMeta, shapes: dict[str, list[int]]) -> None:
    """The network config.json and bioner.json describe, built on the meta device (no memory), has
    exactly the tensors of model.safetensors."""
    from transformers import AutoModel  # lazy (platform/README.md)

    try:
        with torch.device("meta"):
            net = BioNERModel(drop_pooler(AutoModel.from_config(config)), meta.num_labels, meta.dropout)
    except Exception as e:  # any config transformers cannot build a network from is the folder's mistake
        raise BionerError(f"{d / CONFIG_FILE}: cannot build an encoder from it ({first_line(e)})") from None
    expected = {k: list(v.shape) for k, v in net.state_dict().items()}
    if "ner_head.weight" in shapes and shapes["ner_head.weight"][:1] != [meta.num_labels]:
        raise BionerError(
            f"{d / META_FILE}: num_labels is {meta.num_labels}, the weights have a "
            f"{shapes['ner_head.weight'][0]}-label head"
        )
    wrong = [k for k in expected if k in shapes and shapes[k] != expected[k]]
    missing, extra = sorted(set(expected) - set(shapes)), sorted(set(shapes) - set(expected))
    if wrong:
        k = wrong[0]
        raise BionerError(
            f"{d}: {CONFIG_FILE} does not match {WEIGHTS_FILE}: {k} is {shapes[k]} in the weights, "
            f"{expected[k]} by the config ({len(wrong)} tensor(s) differ)"
        )
    if missing or extra:
        what = (
            f"{len(missing)} tensor(s) the config needs are missing ({missing[0]})"
            if missing
            else f"{len(extra)} tensor(s) the config has no place for ({extra[0]})"
        )
        raise BionerError(f"{d}: {CONFIG_FILE} does not match {WEIGHTS_FILE}: {what}")


def load_model(
    model_dir: str | Path, device: str | torch.device = "cpu"
) -> tuple[BioNERModel, PreTrainedTokenizerBase, ModelMeta]:
    """Load a saved model folder: (model in eval mode, tokenizer, meta). No pickle, no network."""
    from transformers import AutoModel, AutoTokenizer  # lazy (platform/README.md)

    d = Path(model_dir)
    meta, config, _ = check_model_folder(d)
    try:
        tok = AutoTokenizer.from_pretrained(d)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BionerError(f"{d}: the tokenizer files cannot be read ({first_line(e)})") from None
    if len(tok) > config.vocab_size:
        raise BionerError(f"{d}: the tokenizer has {len(tok)} tokens, the encoder's embeddings {config.vocab_size}")
    limit = position_limit(config, tok)
    if limit is not None and meta.max_length > limit:
        raise BionerError(f"{d / META_FILE}: max_length {meta.max_length} is more than the encoder's {limit} positions")
    encoder = drop_pooler(AutoModel.from_config(config))
    model = BioNERModel(encoder, meta.num_labels, meta.dropout)
    model.load_state_dict(load_file(str(d / WEIGHTS_FILE)), strict=True)
    return model.to(device).eval(), tok, meta
