"""A bench config: a training config plus how long to measure, and the systems compared."""

from __future__ import annotations

from pydantic import Field

from ..config import TrainConfig

VARIANTS = {  # the bioner systems of the training benchmark: config overrides
    # the default: random batches (the HF recipe's order), each step run as micro-batches: packed in bf16
    # where the chip multiplies bf16 natively (a GPU, an AMX CPU), else length-sorted in fp32
    "bioner single": {"beta": 0.0},
    "bioner single, fp32 unpacked": {"beta": 0.0, "bf16": False},  # what a CPU without native bf16 runs
    "bioner single, grouped": {"beta": 0.0, "group_by_length": True},
    "bioner single, whole batches": {"beta": 0.0, "micro_batching": False},  # one forward a step, as the HF recipe
    "bioner multi": {"beta": 1.0, "query_source": "annotation"},
    "bioner multi, fp32 unpacked": {"beta": 1.0, "query_source": "annotation", "bf16": False},
    "bioner multi, grouped": {"beta": 1.0, "query_source": "annotation", "group_by_length": True},
    "bioner multi, whole batches": {"beta": 1.0, "query_source": "annotation", "micro_batching": False},
    # no query: the MRC input is the NER input, one encoder pass serves both heads
    "bioner multi, no query": {"beta": 1.0, "query_source": "none"},
}
HF_TRAINER = "HF Trainer recipe"
HF_TRAINER_BF16 = "HF Trainer recipe, bf16"  # TrainingArguments(bf16=True): the recipe's own autocast
HF_SYSTEMS = {HF_TRAINER: False, HF_TRAINER_BF16: True}  # name -> bf16


class BenchConfig(TrainConfig):
    """A training config plus how long to measure. Defaults: the paper's batch and max length."""

    steps: int = Field(5, ge=1, description="measured optimizer steps per repeat (training)")
    skip_steps: int = Field(2, ge=0, description="warm-up steps excluded from the figures (training)")
    repeats: int = Field(3, ge=1, description="blocks measured; figures are medians over blocks")
    sentences: int = Field(940, ge=1, description="texts tagged per repeat (prediction), from eval_split")
    model: str | None = Field(
        None,
        description="model to benchmark prediction with (folder or MLflow URI); default: the encoder with a seeded "
        "random head",
    )
    systems: list[str] = Field(
        [*VARIANTS, *HF_SYSTEMS],
        min_length=1,
        description=f"training systems to run: any of {[*VARIANTS, *HF_SYSTEMS]}",
    )
    out: str = Field("outputs/bench", description="folder for the JSON results")
    peak_tflops: float | None = Field(
        None,
        gt=0,
        description="the accelerator's dense bf16 peak in TFLOP/s (H100/H200 SXM: 989): prints model FLOP "
        "utilisation, 6 x parameters x tokens/s over it",
    )
