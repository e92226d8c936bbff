"""The model: an encoder shared by a BIO token head and the MRC start/end heads, its losses, and
the saved-model folder (safetensors + JSON, no pickle) with its metadata (ModelMeta)."""

from .encoder import check_encoder, load_encoder, load_tokenizer, position_limit, resolve_encoder
from .io import META_FILE, WEIGHTS_FILE, build_model, check_model_folder, load_model, read_meta, save_model
from .meta import CorpusTypes, ModelMeta
from .network import BioNERModel, mrc_loss, ner_loss

__all__ = [
    "BioNERModel",
    "CorpusTypes",
    "META_FILE",
    "ModelMeta",
    "WEIGHTS_FILE",
    "build_model",
    "check_encoder",
    "check_model_folder",
    "load_encoder",
    "load_model",
    "load_tokenizer",
    "mrc_loss",
    "ner_loss",
    "position_limit",
    "read_meta",
    "resolve_encoder",
    "save_model",
]
