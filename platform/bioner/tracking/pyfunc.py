"""The MLflow pyfunc flavour of a bioner model: raw text in, entities with character offsets out.

Loaded by MLflow through the logged entry file (`mlflow_model.py`, a model "from code": no pickled
object is stored). Models logged before the package was layered name `bioner.pyfunc`, which
re-exports this class.
"""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import pandas as pd

from ..infer.tagger import Tagger


def _texts(model_input) -> list[str]:
    """Accept a str, a list of str, a numpy array, a DataFrame (first column) or {"inputs": [...]}."""
    if isinstance(model_input, dict):
        model_input = model_input.get("inputs", model_input.get("text", []))
    if isinstance(model_input, pd.DataFrame):
        model_input = model_input.iloc[:, 0].tolist()
    elif isinstance(model_input, pd.Series):
        model_input = model_input.tolist()
    elif isinstance(model_input, np.ndarray):
        model_input = model_input.reshape(-1).tolist()
    if isinstance(model_input, str):
        model_input = [model_input]
    return ["" if x is None else str(x) for x in model_input]


class BioNERPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        # The model is logged with model_config {"precision": "auto"}; MLflow's own overrides change it:
        # load_model(..., model_config={"precision": "fp32"}), or for `mlflow models serve` the variable
        # MLFLOW_PYFUNC_INFERENCE_CONFIG='{"precision": "fp32"}'. Models logged before: auto.
        precision = (getattr(context, "model_config", None) or {}).get("precision", "auto")
        self.tagger = Tagger.load(context.artifacts["model"], precision=precision)

    # No type hints on predict: MLflow would infer the signature from them and drop the params
    # schema the model is logged with (tracking.models.signature).
    def predict(self, model_input, params=None):
        """One list of {"text", "start", "end", "type"} per input text; params {"types": [...]} keeps only those types."""
        types = (params or {}).get("types") or None  # the schema's default, [], means every type
        return self.tagger.entities(_texts(model_input), types=[types] if isinstance(types, str) else types)
