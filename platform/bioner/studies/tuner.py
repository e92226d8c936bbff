"""Fitting a Ray Tune Tuner, or restoring the one a killed driver left, for tune and sweep."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def fit_or_restore(run_dir: Path, trainable, resume: bool, build: Callable[[], Any]):
    """Restore the Tuner a killed driver left in `run_dir` (finished trials are not run again),
    else fit the Tuner that `build` makes. The result grid's `interrupted` says whether Ctrl-C
    (SIGINT) ended the fit early."""
    import signal
    import threading

    from ray import tune  # lazy (platform/README.md)

    before = signal.getsignal(signal.SIGINT)
    if resume and tune.Tuner.can_restore(str(run_dir)):
        results = tune.Tuner.restore(str(run_dir), trainable=trainable, resume_errored=True).fit()
    else:
        results = build().fit()
    # Tune installs its own SIGINT handler for the fit (in the main thread, unless
    # TUNE_DISABLE_SIGINT_HANDLER) and puts the previous one back only when the signal came; it
    # returns normally either way, so the handler in place now says which happened.
    watched = (
        threading.current_thread() is threading.main_thread()
        and os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0") == "0"
    )
    results.interrupted = watched and signal.getsignal(signal.SIGINT) is before
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, before)
    return results


# --------------------------------------------------------------------------- a training job's run
