"""The paper's reference F1, read from a data file (experiments/paper/reference_f1.yaml)."""

from __future__ import annotations

from pathlib import Path

import yaml

from ...data.specs import REPO_ROOT
from ...errors import BionerError

REFERENCE = Path("experiments") / "paper" / "reference_f1.yaml"


def reference_file() -> Path | None:
    """The reference file of the working directory (a job's shipped folder), else of this checkout."""
    for base in (Path.cwd(), REPO_ROOT):
        if (base / REFERENCE).is_file():
            return base / REFERENCE
    return None


class PaperF1:
    """(dataset, beta, query source, training fraction) -> the paper's test F1 in %, or None."""

    def __init__(self, path: Path | None = None):
        path = path or reference_file()
        self.path, self.table = path, {}
        if path is None:
            return
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))["f1"]
            self.table = {
                (ds, method, round(float(fr), 4)): float(f1)
                for ds, by_frac in raw.items()
                for fr, by_method in by_frac.items()
                for method, f1 in by_method.items()
            }
        except (yaml.YAMLError, KeyError, TypeError, AttributeError, ValueError) as e:
            raise BionerError(f"{path}: not a reference table (dataset -> fraction -> method -> F1): {e}") from None

    def __call__(self, dataset: str, beta: float, query_source: str, fraction: float) -> float | None:
        method = "single" if beta == 0 else query_source
        return self.table.get((dataset, method, round(fraction, 4)))
