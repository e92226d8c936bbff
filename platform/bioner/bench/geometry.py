"""Randomly initialised encoders of standard geometries: GPU throughput needs the shape of BERT-base,
not its weights, and a GPU machine without a hub can build them from a config."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import BionerError
from ..model import load_tokenizer

GEOMETRIES = {  # transformers BertConfig keys
    "bert-base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    "bert-large": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096},
    "minilm": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536},
}


def random_encoder(out_dir: Path, geometry: str = "bert-base", seed: int = 0) -> Path:
    """Write a random BERT of `geometry` with the packaged MiniLM tokenizer (BERT's uncased vocabulary)."""
    from transformers import BertConfig, BertModel  # lazy (platform/README.md)

    if geometry not in GEOMETRIES:
        raise BionerError(f"--geometry {geometry!r}: expected one of {', '.join(GEOMETRIES)}")
    tok = load_tokenizer("minilm")
    torch.manual_seed(seed)
    BertModel(
        BertConfig(vocab_size=tok.vocab_size, max_position_embeddings=512, **GEOMETRIES[geometry])
    ).save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return Path(out_dir)
