"""The MLflow pyfunc flavour of a bioner model: raw text in, entities with character offsets out.

Loaded by MLflow through the logged entry file (`mlflow_model.py`, a model "from code": no pickled
object is stored). Models logged before the package was layered name `bioner.pyfunc`, which
re-exports this class.

Served by `mlflow models serve`, a request is bounded before any work: at most $BIONER_MAX_TEXTS
texts and $BIONER_MAX_TEXT_CHARS characters per text, else a 400 that says which limit. A request
the server has given up on (504 after $MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT seconds) stops at its
next batch instead of running on in its thread. And no error quotes the request back.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import BAD_REQUEST

from ..infer.tagger import Tagger
from ..infer.text import MAX_TEXT_CHARS_ENV, MAX_TEXTS_ENV, max_text_chars, max_texts

TIMEOUT_ENV = "BIONER_PREDICT_TIMEOUT_S"  # a time limit per predict call outside the scoring server too
ECHO_LIMIT = 500  # characters of an error message about a payload (the server quotes the payload whole)


def _texts(model_input: Any) -> list[str]:
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


class InputRefused(MlflowException):
    """A request over the bounds: HTTP 400 with this message only.

    The scoring server rewrites the message of an MlflowException raised by predict into
    "Failed to predict data '<the whole input>'. \\nError: <message>", so the whole text would come back
    in the 400. This exception keeps its own message through that rewrite."""

    def __init__(self, message: str):
        super().__init__(message, error_code=BAD_REQUEST)

    @property
    def message(self) -> str:
        return self._own

    @message.setter
    def message(self, value: str) -> None:
        if not hasattr(self, "_own"):
            self._own = value


class Abandoned(TimeoutError):
    """The request's time limit passed: its client has its 504, the work stops here."""


def check_bounds(texts: list[str]) -> None:
    limit = max_texts()
    if len(texts) > limit:
        raise InputRefused(
            f"{len(texts):,} texts in one request, more than the limit of {limit:,} (${MAX_TEXTS_ENV} on the server)"
        )
    chars = max_text_chars()
    for i, t in enumerate(texts):
        if len(t) > chars:
            raise InputRefused(
                f"text {i}: {len(t):,} characters, more than the limit of {chars:,} per text "
                f"(${MAX_TEXT_CHARS_ENV} on the server)"
            )


def time_limit() -> float | None:
    """Seconds one predict call may take: $BIONER_PREDICT_TIMEOUT_S, else, under MLflow's scoring
    server, its request timeout (after which it has answered 504 and nobody waits for the work)."""
    own = os.environ.get(TIMEOUT_ENV)
    if own:
        return float(own)
    if os.environ.get("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", "").lower() in ("true", "1"):
        return float(os.environ.get("MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT") or 60)
    return None


def _cut_payload_echo() -> None:
    """The scoring server answers malformed JSON with a 400 that quotes the whole payload (as large
    out as in): keep the reason, cut the quote. Only in a process that serves (the module is loaded)."""
    server = sys.modules.get("mlflow.pyfunc.scoring_server")
    decode = getattr(server, "_decode_json_input", None)
    if decode is None or getattr(decode, "bioner_cut", False):
        return

    def decode_without_echo(json_input: str | bytes) -> Any:
        try:
            return decode(json_input)
        except MlflowException as e:
            reason = e.message.split("\nInput:", 1)[0]
            raise MlflowException(reason[:ECHO_LIMIT], error_code=BAD_REQUEST) from None

    decode_without_echo.bioner_cut = True
    server._decode_json_input = decode_without_echo


class BioNERPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        # The model is logged with model_config {"precision": "auto"}; MLflow's own overrides change it:
        # load_model(..., model_config={"precision": "fp32"}), or for `mlflow models serve` the variable
        # MLFLOW_PYFUNC_INFERENCE_CONFIG='{"precision": "fp32"}'. Models logged before: auto.
        precision = (getattr(context, "model_config", None) or {}).get("precision", "auto")
        self.tagger = Tagger.load(context.artifacts["model"], precision=precision)
        self._local = threading.local()  # the deadline of the request each server thread is working on
        self.tagger.before_batch = self._check_deadline  # runs before every batch, fp32 or int8
        _cut_payload_echo()

    def _check_deadline(self) -> None:
        deadline = getattr(self._local, "deadline", None)
        if deadline is not None and time.monotonic() > deadline:
            raise Abandoned("the request's time limit passed; its work is stopped")

    # No type hints on predict: MLflow would infer the signature from them and drop the params
    # schema the model is logged with (tracking.models.signature).
    def predict(self, model_input, params=None):
        """One list of {"text", "start", "end", "type", "score"} per input text; params {"types": [...]}
        keeps only those types."""
        texts = _texts(model_input)
        check_bounds(texts)
        types = (params or {}).get("types") or None  # the schema's default, [], means every type
        limit = time_limit()
        self._local.deadline = None if limit is None else time.monotonic() + limit
        try:
            return self.tagger.entities(texts, types=[types] if isinstance(types, str) else types)
        finally:
            self._local.deadline = None
