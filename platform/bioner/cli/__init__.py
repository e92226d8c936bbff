"""The `bioner` command: one typer app, one module per command group."""

from __future__ import annotations

import os
import sys
import warnings

import typer

from ..errors import BionerError, SystemFailure
from . import annotate, bench, cluster, datasets, models, serve, studies, train
from .common import err

app = typer.Typer(
    help="Biomedical NER with the multi-task MRC method: Ray Train trains, Ray Tune searches, MLflow tracks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for _group in (train, models, studies, annotate, serve, datasets, cluster, bench):
    _group.register(app)


def main() -> None:
    """Console entry point: a user's mistake is one line on stderr and exit code 2, a failure of the
    system one line starting `failed:` and exit code 1."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow warns on importing mlflow.pyfunc, and on logging this model (its output is one list
    # of entity dicts per text), that it cannot validate `Any` type hints: nothing a user can act on.
    warnings.filterwarnings("ignore", message=".*Any type hint is inferred as AnyType", category=UserWarning)
    try:
        app()
    except BionerError as e:
        err.print(str(e), markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except SystemFailure as e:
        err.print(f"failed: {e}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)
