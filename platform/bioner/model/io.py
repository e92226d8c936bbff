"""A saved model is a folder: the encoder's `config.json`, the tokenizer files, `model.safetensors`
(all weights, heads included) and `bioner.json` (labels, entity types, queries, max length).
Loading it needs no pickle and no network.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import BionerError
from .encoder import drop_pooler, load_encoder
from .network import BioNERModel

FORMAT_VERSION = 1
META_FILE = "bioner.json"
WEIGHTS_FILE = "model.safetensors"


def build_model(encoder_name: str, num_labels: int, dropout: float = 0.1, trust_remote_code: bool = False) -> BioNERModel:
    return BioNERModel(load_encoder(encoder_name, trust_remote_code), num_labels, dropout)


def save_model(model: BioNERModel, tokenizer, out_dir: str | Path, meta: dict) -> Path:
    """Write config, tokenizer, safetensors weights and bioner.json into `out_dir`."""
    model = getattr(model, "module", model)  # unwrap DDP
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.encoder.config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    meta = {"format_version": FORMAT_VERSION, "num_labels": model.ner_head.out_features, **meta}
    (out / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return out


def read_meta(model_dir: str | Path) -> dict:
    """A model folder's bioner.json (labels, types, corpora, queries, encoder, max length)."""
    d = Path(model_dir)
    if not (d / META_FILE).is_file():
        raise BionerError(f"{d}: not a bioner model folder (needs {META_FILE} and {WEIGHTS_FILE})")
    return json.loads((d / META_FILE).read_text(encoding="utf-8"))


def load_model(model_dir: str | Path, device: str | torch.device = "cpu") -> tuple[BioNERModel, object, dict]:
    """Load a saved model folder: (model in eval mode, tokenizer, meta). No pickle, no network."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer  # lazy: transformers takes 1.5 s to import

    d = Path(model_dir)
    if not (d / META_FILE).is_file() or not (d / WEIGHTS_FILE).is_file():
        raise BionerError(f"{d}: not a bioner model folder (needs {META_FILE} and {WEIGHTS_FILE})")
    meta = json.loads((d / META_FILE).read_text(encoding="utf-8"))
    config = AutoConfig.from_pretrained(d)
    encoder = drop_pooler(AutoModel.from_config(config))
    model = BioNERModel(encoder, meta["num_labels"], meta.get("dropout", 0.1))
    state = load_file(str(d / WEIGHTS_FILE))
    model.load_state_dict(state, strict=True)
    tok = AutoTokenizer.from_pretrained(d)
    return model.to(device).eval(), tok, meta
