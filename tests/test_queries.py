from bioner.data.iob import Split
from bioner.data.queries import Queries
from bioner.data.specs import load_spec
from helpers import write_corpus, write_spec


def _train():
    return Split(
        "train",
        None,
        [["aspirin", "and", "flu"], ["measles"], ["gout", "x"]],
        [["O", "O", "B-Disease"], ["B-Disease"], ["B-Disease", "O"]],
        ["toy"] * 3,
        [("Disease",)] * 3,
    )


def test_sources_use_the_spec_texts():
    spec = load_spec("ncbi-disease")
    for src in ("wikipedia", "annotation"):
        q = Queries.build(spec, src, None)
        assert q.text("Disease") == getattr(spec.entity_types["Disease"], src)
    assert Queries.build(spec, "none", None).text("Disease") == ""


def test_dictionary_samples_training_entities_only_and_is_seeded(tmp_path):
    spec = load_spec("ncbi-disease")
    q = Queries.build(spec, "dictionary", _train(), seed=1, n_examples=2)
    text = q.text("Disease")
    assert text.startswith("Can you detect entities like ") and text.endswith(" ?")
    named = text[len("Can you detect entities like ") : -2].split(", ")
    assert len(named) == 2 and set(named) <= {"flu", "measles", "gout"}
    assert Queries.build(spec, "dictionary", _train(), seed=1, n_examples=2).text("Disease") == text


def test_random_picks_per_example_deterministically():
    spec = load_spec("ncbi-disease")
    q = Queries.build(spec, "random", _train(), seed=3)
    texts = [q.text("Disease", i) for i in range(60)]
    assert texts == [q.text("Disease", i) for i in range(60)]
    assert set(texts) == set(q.all_texts("Disease")) and len(set(texts)) == 3


def test_round_trips_through_a_dict():
    spec = load_spec("ncbi-disease")
    q = Queries.build(spec, "random", _train(), seed=3)
    r = Queries.from_dict(q.to_dict())
    assert [r.text("Disease", i) for i in range(10)] == [q.text("Disease", i) for i in range(10)]


def test_several_entity_types_get_one_query_each(tmp_path):
    corpus = write_corpus(tmp_path / "c", {"train": "a\tB-Gene\nb\tB-Drug\n", "devel": "a\tO\n", "test": "a\tO\n"})
    spec = load_spec(write_spec(tmp_path / "s.yaml", str(corpus), types=("Gene", "Drug")))
    q = Queries.build(spec, "annotation", None)
    assert q.text("Gene") != q.text("Drug") and "gene" in q.text("Gene")
