"""The logged MLflow model of a run, and model URIs (folders, runs:/, models:/) resolved to a folder."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BionerError, first_line
from .metrics import metric_keys

if TYPE_CHECKING:  # mlflow takes seconds to import: only where it is used
    from mlflow.models import ModelSignature
    from mlflow.models.model import ModelInfo

MODEL_NAME = "model"  # the logged model's name in its run: runs:/<run_id>/model
# What a loader may override (mlflow.pyfunc.load_model(model_config=...), $MLFLOW_PYFUNC_INFERENCE_CONFIG).
MODEL_CONFIG = {"precision": "auto"}
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


def log_final(metrics: dict[str, float], predictions: Path, model_dir: Path) -> str:
    """Log scores, predictions and the model to the active run; return the model's URI."""
    import mlflow  # lazy (platform/README.md)

    mlflow.log_metrics({k: float(v) for k, v in metric_keys(metrics).items()})
    mlflow.log_artifact(str(predictions), "predictions")
    return log_model(model_dir).model_uri


def signature() -> ModelSignature:
    """Texts in, one list of entities per text out; param `types` (a list of type names) filters."""
    from mlflow.models import ModelSignature  # lazy (platform/README.md)
    from mlflow.types import DataType
    from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec(DataType.string)]),
        outputs=Schema([ColSpec(AnyType())]),
        params=ParamSchema([ParamSpec("types", DataType.string, [], shape=(-1,))]),
    )


def log_model(model_dir: Path) -> ModelInfo:
    """Log the folder as an MLflow pyfunc mapping raw text to entities (character offsets)."""
    import mlflow  # lazy (platform/README.md)

    return mlflow.pyfunc.log_model(
        name=MODEL_NAME,
        python_model=str(MODEL_CODE),
        artifacts={"model": str(model_dir)},
        pip_requirements=pip_requirements(),
        model_config=MODEL_CONFIG,
        signature=signature(),
    )


def resolve_model(uri: str, tracking_uri: str | None = None) -> Path:
    """A local model folder, or any MLflow model URI (runs:/..., models:/name@alias) downloaded, from
    `tracking_uri` (also its registry) when given, else from the process's default store."""
    p = Path(uri).expanduser()
    if p.is_dir():
        if (p / "bioner.json").is_file():
            return p
        # a downloaded pyfunc: the model folder sits under artifacts/
        found = sorted({f.parent for f in [*p.glob("artifacts/*/bioner.json"), *p.glob("*/bioner.json")]})
        if len(found) == 1:
            return found[0]
        if len(found) > 1:  # e.g. outputs/models: picking one would be a guess
            more = f" and {len(found) - 5} more" if len(found) > 5 else ""
            names = ", ".join(str(f.relative_to(p)) for f in found[:5]) + more
            raise BionerError(f"--model {uri}: this folder holds {len(found)} models ({names}); name one of them")
        raise BionerError(f"--model {uri}: no bioner.json in this folder")
    if "://" in uri or uri.startswith(("runs:/", "models:/")):
        import mlflow  # lazy (platform/README.md)

        try:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=uri, tracking_uri=tracking_uri, registry_uri=tracking_uri
                )
            )
        except Exception as e:  # MLflow raises several types for a bad URI
            raise BionerError(f"--model {uri}: cannot download ({first_line(e)})") from None
        return resolve_model(str(local))
    raise BionerError(f"--model {uri}: no such folder, and not an MLflow model URI")
