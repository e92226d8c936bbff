"""Before `--resume`: the newest checkpoint of a Ray Train run that can really be restored.

Ray Train keeps the last checkpoints of a run (`CheckpointConfig(num_to_keep)`) and a snapshot
that names them (`checkpoint_manager_snapshot.json`); restarting restores the latest one named
there. A checkpoint deleted or truncated after a crash made every worker fail in turn (Ray
tracebacks, a minute later). Here each checkpoint is checked, newest first, and the damaged ones
are dropped from the snapshot, so that Ray restores the newest good one: one epoch back.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import BionerError, first_line
from ..model import check_model_folder
from .worker import MODEL_SUBDIR, TRAIN_STATE

SNAPSHOT = "checkpoint_manager_snapshot.json"


@dataclass
class Restorable:
    epoch: int  # the epoch the checkpoint ends (1-based); training resumes after it
    dropped: list[str]  # why newer checkpoints could not be used, one line each


def checkpoint_problem(d: Path) -> str | None:
    """Why this checkpoint folder cannot be restored (None: it can)."""
    if not d.is_dir():
        return f"{d.name} is gone"
    try:
        check_model_folder(d / MODEL_SUBDIR)
    except BionerError as e:
        return str(e)
    state = d / TRAIN_STATE
    if not state.is_file():
        return f"{state}: missing"
    try:  # torch.save writes a zip: a truncated or damaged one fails its CRCs without unpickling anything
        with zipfile.ZipFile(state) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError) as e:
        return f"{state}: damaged ({first_line(e, 100)})"
    return f"{state}: damaged ({bad})" if bad else None


def restorable_checkpoint(run_dir: Path) -> Restorable | None:
    """The newest good checkpoint of the run in `run_dir`, the snapshot rewritten to restore it.
    None when the run has no snapshot (it never checkpointed); an error when nothing is usable."""
    snap = run_dir / SNAPSHOT
    if not snap.is_file():
        return None
    try:
        state = json.loads(snap.read_text(encoding="utf-8"))
        # Ray asserts these lists are parallel when it restores: a snapshot where they are not is damaged
        results = list(zip(state["checkpoint_report_indices"], state["checkpoint_results"], strict=True))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise BionerError(f"--resume: {snap} is damaged ({first_line(e, 120)}); train again without --resume") from None
    dropped: list[tuple[dict, str]] = []
    for _, result in sorted(results, key=lambda x: x[0], reverse=True):
        why = checkpoint_problem(run_dir / result["checkpoint_dir_name"])
        if why is None:
            if dropped:
                _keep_only(snap, state, result, {r["checkpoint_dir_name"] for r, _ in dropped})
                for r, _ in dropped:
                    shutil.rmtree(run_dir / r["checkpoint_dir_name"], ignore_errors=True)
            return Restorable(int(result.get("metrics", {}).get("epoch", 0)), [why for _, why in dropped])
        dropped.append((result, why))
    detail = "; ".join(f"epoch {r.get('metrics', {}).get('epoch', '?')}: {why}" for r, why in dropped)
    detail = detail or "none recorded"
    raise BionerError(f"--resume: no checkpoint of this run can be restored ({detail}); train again without --resume")


def _keep_only(snap: Path, state: dict, latest: dict, drop: set[str]) -> None:
    """Rewrite Ray's snapshot without the damaged checkpoints, `latest` as the one to restore."""
    pairs = [
        (i, r)
        for i, r in zip(state["checkpoint_report_indices"], state["checkpoint_results"], strict=True)
        if r["checkpoint_dir_name"] not in drop
    ]
    state["checkpoint_report_indices"] = [i for i, _ in pairs]
    state["checkpoint_results"] = [r for _, r in pairs]
    state["latest_checkpoint_result"] = latest
    pending = [
        (r, v)
        for r, v in zip(
            state.get("pending_training_results", []), state.get("pending_validation_specs", []), strict=True
        )
        if r["checkpoint_dir_name"] not in drop
    ]
    state["pending_training_results"] = [r for r, _ in pending]
    state["pending_validation_specs"] = [v for _, v in pending]
    for key in (
        "validated_checkpoint_dir_names",
        "timed_out_validation_checkpoint_dir_names",
        "failed_validation_checkpoint_dir_names",
    ):
        state[key] = [n for n in state.get(key, []) if n not in drop]
    tmp = snap.with_suffix(".tmp")
    tmp.write_text(json.dumps(state), encoding="utf-8")
    tmp.replace(snap)
