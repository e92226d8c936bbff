"""A tune config: a training config plus the budget and the space of the search."""

from __future__ import annotations

import warnings

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..config import QUERY_SOURCES, QuerySource, TrainConfig

SEARCHED = ("alpha", "beta", "learning_rate", "query_source")


class SearchSpace(BaseModel):
    """Ranges searched by Optuna. alpha, beta: uniform; learning_rate: log-uniform."""

    model_config = ConfigDict(extra="forbid")
    alpha: tuple[float, float] = Field((0.0, 1.0), description="[low, high] of the NER loss weight")
    beta: tuple[float, float] = Field((0.0, 1.0), description="[low, high] of the MRC loss weight")
    learning_rate: tuple[float, float] = Field((1e-5, 5e-5), description="[low, high], sampled log-uniform")
    query_source: list[QuerySource] = Field(list(QUERY_SOURCES), min_length=1, description="query sources to try")

    @model_validator(mode="after")
    def _check(self):
        for k in ("alpha", "beta"):
            lo, hi = getattr(self, k)
            if not 0 <= lo <= hi <= 1:
                raise ValueError(f"{k}: need 0 <= low <= high <= 1, got [{lo}, {hi}]")
        if self.alpha[1] == 0 and self.beta[1] == 0:
            raise ValueError("alpha and beta ranges are both [0, 0]: alpha + beta must be > 0")
        lo, hi = self.learning_rate
        if not 0 < lo <= hi:
            raise ValueError(f"learning_rate: need 0 < low <= high, got [{lo}, {hi}]")
        return self

    def contains(self, point: dict) -> bool:
        return (
            all(getattr(self, k)[0] <= point[k] <= getattr(self, k)[1] for k in ("alpha", "beta", "learning_rate"))
            and point["query_source"] in self.query_source
        )


# `register` is the config key users write; on the class it hides ABCMeta.register, which pydantic
# models inherit and nothing here calls, so pydantic's warning about it says nothing to a user.
warnings.filterwarnings("ignore", message='Field name "register" in "TuneConfig" shadows', category=UserWarning)


class TuneConfig(TrainConfig):
    """A training config plus the budget of the search. `bioner train` on it trains the base values."""

    num_samples: int = Field(8, ge=1, description="trials in the search (the paper and baseline points count)")
    max_concurrent_trials: int = Field(1, ge=1, description="trials at once; each takes num_workers x cpus_per_worker")
    max_epochs: int = Field(3, ge=1, description="epochs of a trial that is not stopped early, and of each refit")
    grace_period: int = Field(1, ge=1, description="ASHA: epochs before a trial can be stopped")
    refit_seeds: int = Field(3, ge=1, description="seeds of the train+devel refit of the best configuration")
    search: SearchSpace = Field(default_factory=SearchSpace, description="the search space")
    register: bool = Field(
        True,
        description="register the first seed's refit as bioner-<dataset> with alias challenger "
        "(chosen without reading a test score)",
    )

    def trial_config(self, params: dict) -> TrainConfig:
        """A trial trains on train and scores devel after every epoch: test is never looked at."""
        return self.train_config(
            **{k: params[k] for k in SEARCHED},
            epochs=self.max_epochs,
            train_splits=["train"],
            eval_split="devel",
            eval_every_epoch=True,
        )

    def refit_config(self, params: dict, seed: int) -> TrainConfig:
        """The best configuration refit on train+devel and scored on test (the paper's protocol)."""
        return self.train_config(
            **{k: params[k] for k in SEARCHED},
            epochs=self.max_epochs,
            seed=seed,
            train_splits=["train", "devel"],
            eval_split="test",
            eval_every_epoch=False,
            run_name=f"refit-seed{seed}",
        )


def points_to_evaluate(space: SearchSpace) -> list[dict]:
    """The paper's setting and the single-task baseline, when the space contains them."""
    pts = [
        {"alpha": 1.0, "beta": 1.0, "learning_rate": 3e-5, "query_source": "annotation"},
        {"alpha": 1.0, "beta": 0.0, "learning_rate": 3e-5, "query_source": "none"},
    ]
    out = []
    for p in pts:
        q = dict(p)
        if not space.contains(q):  # clip into the space instead of dropping the idea
            q["learning_rate"] = min(max(q["learning_rate"], space.learning_rate[0]), space.learning_rate[1])
            if q["query_source"] not in space.query_source:
                q["query_source"] = space.query_source[0]
        if space.contains(q):
            out.append(q)
    return out
