"""The MLflow pyfunc flavour of a bioner model: raw text in, entities with character offsets out."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow.pyfunc


def _texts(model_input) -> list[str]:
    """Accept a str, a list of str, a numpy array, a DataFrame (first column) or {"inputs": [...]}."""
    import numpy as np
    import pandas as pd

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
        from .predict import Tagger

        self.tagger = Tagger.load(context.artifacts["model"])

    def predict(self, model_input: list[str], params: dict[str, Any] | None = None) -> list[Any]:
        """One list of {"text", "start", "end", "type"} per input text."""
        return self.tagger.entities(_texts(model_input))


# Logged as "model from code": MLflow stores this file, not a pickle of an object.
MODEL_CODE = Path(__file__).with_name("mlflow_model.py")


def pip_requirements() -> list[str]:
    reqs = []
    for pkg in ("bioner-mrc", "torch", "transformers", "safetensors", "mlflow"):
        try:
            reqs.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            reqs.append(pkg)
    return reqs
