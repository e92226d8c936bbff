"""The paper's sweep configs load in both profiles, with the grids the issue asks for."""

import pytest

from bioner.errors import ConfigError
from bioner.studies.sweep_config import grid, load_sweep
from helpers import EXPERIMENTS

PAPER = EXPERIMENTS / "paper"
DATASETS = {"bc2gm", "bc5cdr-chem", "ncbi-disease"}
QUERIES = {"none", "wikipedia", "annotation", "dictionary", "random"}


def _load(name, profile, *extra):
    cfg = load_sweep(PAPER / name, [f"profile={profile}", *extra])
    return cfg, grid(cfg)


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_table3_single_vs_best_query_on_three_datasets(profile):
    cfg, cells = _load("table3.yaml", profile)
    assert {c.dataset for c in cells} == DATASETS
    assert set(cfg.variants) == {"single", "multi"} and cfg.baseline_variant() == "single"
    assert len(cells) == 3 * 2 * cfg.seeds
    best = {c.dataset: c.config.query_source for c in cells if c.variant == "multi"}
    assert best == {"bc2gm": "annotation", "bc5cdr-chem": "wikipedia", "ncbi-disease": "annotation"}  # METHOD.md
    assert all(c.config.beta == 0 for c in cells if c.variant == "single")


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_table4_five_query_sources_on_three_datasets(profile):
    cfg, cells = _load("table4.yaml", profile)
    queries = {c.config.query_source for c in cells if c.config.beta > 0}
    assert queries == QUERIES and {c.dataset for c in cells} == DATASETS
    assert len(cells) == 3 * (len(QUERIES) + 1) * cfg.seeds  # + the single-task baseline for the p-values


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_table5_low_resource_fractions(profile):
    cfg, cells = _load("table5.yaml", profile)
    fracs = {c.train_fraction for c in cells}
    assert fracs == ({1.0, 0.5, 0.25, 0.1} if profile == "gpu" else {0.25, 0.1})
    assert len(cells) == len(fracs) * 2 * cfg.seeds and cfg.seeds >= 3


def test_gpu_profiles_use_biobert_and_the_paper_epochs():
    for name in ("table3.yaml", "table4.yaml", "table5.yaml"):
        _, cells = _load(name, "gpu")
        for c in cells:
            assert c.config.encoder == "biobert" and c.config.use_gpu
            assert c.config.batch_size == 32 and c.config.max_length == 256
            assert c.config.epochs == (100 if c.dataset == "ncbi-disease" else 50)
            assert c.config.train_splits == ["train", "devel"] and c.config.eval_split == "test"


def test_cpu_profiles_use_minilm_and_set_overrides_the_profile():
    cfg, cells = _load("table5.yaml", "cpu", "epochs=1", "seeds=4", "train_fractions=[0.1]")
    assert cfg.encoder == "minilm" and len(cells) == 2 * 4
    assert all(c.config.epochs == 1 and c.config.train_fraction == 0.1 for c in cells)
    assert [c.seed for c in cells][:2] == [42, 42]  # seed-major: a cut-short sweep still has whole seeds


@pytest.mark.parametrize(
    "override, key",
    [
        ("variants.multi.bogus=1", "bogus"),
        ("variants.multi.beta=2", "beta"),
        ("variants.multi.seed=1", "variants.multi.seed"),
        ("profile=tpu", "profile"),
        ("seeds=0", "seeds"),
        ("train_fractions=[0.0]", "train_fractions"),
        ("baseline=nope", "baseline"),
        ("per_dataset.nope.epochs=1", "per_dataset.nope"),
    ],
)
def test_bad_sweep_keys_name_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_sweep(PAPER / "table5.yaml", [override])
    assert key in str(e.value) and "table5.yaml" in str(e.value)
