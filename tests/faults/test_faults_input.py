"""Bad input: corpora, configs and texts are either handled or refused with one line, exit 2.

The line-level corpus cases (wrong field count, bad tag, undeclared type, not UTF-8, CRLF/BOM)
and the config-value unit cases are in tests/test_corpora.py and tests/test_config.py; here the
same refusals go through the `bioner` entry point, plus the cases of issue #5.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from _faultkit import assert_refused, bioner, clean_env

from helpers import EXPERIMENTS, save_pyfunc, save_random_model, write_corpus, write_spec

SMALL = {"train": "flu\tB-Disease\nx\tO\n", "devel": "a\tO\n", "test": "a\tO\n"}


@pytest.fixture
def toy(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", SMALL)
    return corpus, write_spec(tmp_path / "toy.yaml", "corpus")


def train(spec, out, *sets: str):
    args = [
        "train",
        str(EXPERIMENTS / "quickstart.yaml"),
        "-q",
        "--set",
        f"dataset={spec}",
        "--set",
        f"output_dir={out}",
    ]
    for s in sets:
        args += ["--set", s]
    return bioner(*args)


def _make_directory(p):
    p.unlink()
    p.mkdir()


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda p: p.unlink(), "train.tsv: file not found"),
        (_make_directory, "train.tsv: is a directory, expected a TSV file"),
        (lambda p: p.write_bytes(b""), "train.tsv:1: empty split: no sentences"),
        (
            lambda p: p.write_text("flu\tB-Disease\nx\tO\n\ny\tB-Gene\n"),
            "train.tsv:4: entity type 'Gene' is not declared",
        ),
    ],
    ids=["missing", "directory", "zero-bytes", "bad-line"],
)
def test_a_broken_corpus_file_stops_train_with_one_line_and_no_finished_run(tmp_path, toy, damage, reason):
    corpus, spec = toy
    damage(corpus / "train.tsv")
    out = tmp_path / "out"
    line = assert_refused(train(spec, out), reason)
    assert line.startswith(str(corpus / "train.tsv"))
    # The corpus is read before the MLflow store is touched: no run, finished or not.
    assert not (out / "mlflow.db").exists()


def test_trailing_spaces_and_a_10000_word_sentence_are_accepted(tmp_path, tiny_bert):
    words = [f"w{i}" for i in range(10_000)]
    train_text = "flu\tB-Disease  \nx \tO \n\n" + "".join(f"{w}\tO \n" for w in words)
    corpus = write_corpus(tmp_path / "c", {**SMALL, "train": train_text})
    spec = write_spec(tmp_path / "s.yaml", str(corpus))
    o = bioner("datasets", "check", str(spec))
    assert o.code == 0, o.stderr
    assert "10000" in o.stdout.replace(",", "")  # the longest sentence, in words

    from bioner.infer.tagger import Tagger

    tagger = Tagger.load(save_random_model(tmp_path / "m", tiny_bert, max_length=64), batch_size=256)
    tags = tagger.tag([words])[0]
    assert len(tags) == len(words) and set(tags) <= {"O", "B-Disease", "I-Disease"}  # every word, through windows


def test_a_million_one_word_sentences_are_checked_in_constant_memory(tmp_path):
    """`bioner datasets check` streams: its peak memory on 1,000,000 sentences (7.9 MB of TSV)
    stays within 40 MiB of its peak on a 3-sentence corpus. Holding the sentences in lists
    would take about 250 MB (measured with tracemalloc)."""
    big = tmp_path / "big"
    big.mkdir()
    with open(big / "train.tsv", "w") as f:
        for i in range(1_000_000):
            f.write(f"w{i % 1000}\t{'B-Disease' if i % 10 == 0 else 'O'}\n\n")
    for split in ("devel", "test"):
        (big / f"{split}.tsv").write_text("a\tO\n")
    small = write_corpus(tmp_path / "small", SMALL)

    def peak_kib(corpus):
        spec = write_spec(tmp_path / f"{corpus.name}.yaml", str(corpus), name=corpus.name)
        code = (
            "import atexit, resource, sys\natexit.register(lambda: "
            "sys.stderr.write(f'maxrss={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\\n'))\nsys.argv = "
            f"['bioner', 'datasets', 'check', {str(spec)!r}]\nfrom bioner.cli import main\nmain()\n"
        )
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=clean_env())
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout, int(r.stderr.rsplit("maxrss=", 1)[1].split()[0])

    stdout, big_kib = peak_kib(big)
    assert "1,000,000" in stdout and "100,000" in stdout  # sentences and entities of train
    _, small_kib = peak_kib(small)
    assert big_kib - small_kib < 40 * 1024, (big_kib, small_kib)


@pytest.mark.parametrize(
    "sets, key",
    [
        (["bogus_key=1"], "bogus_key: unknown key"),
        (["epochs=two"], "epochs"),
        (["alpha=-0.5"], "alpha"),
        (["learning_rate=0"], "learning_rate"),
        (["learning_rate=-1e-5"], "learning_rate"),
        (["train_fraction=0"], "train_fraction"),
        (["train_fraction=1.01"], "train_fraction"),
        (["alpha=0", "beta=0"], "alpha and beta are both 0"),
        (["experiment=../../escape"], "experiment"),
        (["experiment=.."], "experiment"),
        (["run_name=a/b"], "run_name"),
    ],
)
def test_a_bad_config_value_is_one_line_naming_the_key(tmp_path, toy, sets, key):
    _, spec = toy
    out = tmp_path / "out"
    assert_refused(train(spec, out, *sets), key)
    assert not out.exists()


@pytest.mark.parametrize(
    "types_yaml, key",
    [
        ("entity_types: {}\n", "entity_types"),
        (
            'entity_types:\n  Disease:\n    wikipedia: w\n    annotation: a\n    dictionary: "entities like these"\n',
            "entity_types.Disease.dictionary",
        ),
        ("entity_types:\n  ../../x:\n    wikipedia: w\n    annotation: a\n", "entity_types"),
    ],
    ids=["no-types", "dictionary-without-examples", "path-like-type"],
)
def test_a_bad_spec_is_one_line_naming_the_key(tmp_path, toy, types_yaml, key):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: bad\ncorpus: corpus\n" + types_yaml)
    line = assert_refused(train(spec, tmp_path / "out"), key)
    assert line.startswith(str(spec))


@pytest.fixture(scope="module")
def pyfunc_model(tmp_path_factory, tiny_bert):
    """The MLflow pyfunc flavour of a (random) model, saved and loaded as `mlflow models serve` does."""
    import mlflow.pyfunc

    d = tmp_path_factory.mktemp("pyfunc")
    return mlflow.pyfunc.load_model(str(save_pyfunc(d / "mlflow", save_random_model(d / "folder", tiny_bert))))


def _valid(text: str, ents: list[dict]) -> None:
    for e in ents:
        assert text[e["start"] : e["end"]] == e["text"] and e["text"].strip() and e["type"] == "Disease"


@pytest.mark.parametrize(
    "text",
    ["", " ", "  \n\t \r\n  ", "\x00\x01\x07\x1b\x7f", "\u200b\u200e\ufeff\u2060"],
    ids=["empty", "space", "whitespace", "controls", "invisible-format"],
)
def test_predict_on_nothing_to_tag_answers_an_empty_list(pyfunc_model, text):
    assert pyfunc_model.predict([text]) == [[]]


@pytest.mark.parametrize(
    "text",
    [
        "Breast\x00cancer\x07 and \x1b[31mflu\x1b[0m in\tthe\u200b patient\x85.",
        "乳腺癌是一种常见的恶性肿瘤。",
        "Рак молочной железы — наследственное заболевание.",
        "سرطان الثدي مرض وراثي",
        "🧬 BRCA1 🦠 mutations ⚕ cause cancer",
        "lone \ud800 surrogate \udcff from bad bytes",
    ],
    ids=["controls-in-text", "chinese", "cyrillic", "arabic", "emoji", "lone-surrogates"],
)
def test_predict_on_odd_text_answers_valid_offsets(pyfunc_model, text):
    (ents,) = pyfunc_model.predict([text])
    _valid(text, ents)
    for e in ents:  # no entity is made of invisible characters
        assert not any(ord(c) < 32 or 0xD800 <= ord(c) <= 0xDFFF for c in e["text"])


def test_predict_answers_a_megabyte_of_text(pyfunc_model):
    text = ("Familial adenomatous polyposis is a hereditary cancer syndrome . " * 16_000)[:1_000_000]
    (ents,) = pyfunc_model.predict([text])
    _valid(text, ents)


def test_predict_cli_refuses_undecodable_text_and_input(tmp_path, tiny_bert):
    model = save_random_model(tmp_path / "m", tiny_bert)
    # bytes that are not UTF-8 reach sys.argv as lone surrogates (surrogateescape)
    assert_refused(
        bioner("predict", "--model", str(model), "ok", b"bad \xff".decode("utf-8", "surrogateescape")),
        "TEXT argument 2: not valid UTF-8",
    )
    bad = tmp_path / "in.txt"
    bad.write_bytes(b"fine\nbad \xff\n")
    assert_refused(bioner("predict", "--model", str(model), "--input", str(bad)), f"--input {bad}: not UTF-8")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert_refused(bioner("predict", "--model", str(model), "--input", str(empty)), "nothing to tag")


# --- disk full, read-only or below the free-space floor: refused before any training ---------


@pytest.fixture
def small_fs(tmp_path):
    """A real 1 MiB filesystem (tmpfs): a full disk and a read-only one without touching the host's."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs on this machine (needs root): {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(folder):
    import errno
    import os

    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_a_full_disk_stops_train_before_training(toy, small_fs):
    corpus, spec = toy
    (small_fs / "out").mkdir()
    _fill(small_fs)
    line = assert_refused(train(spec, small_fs / "out"), f"output_dir {small_fs / 'out'}", "No space left on device")
    assert "not writable" in line
    assert not (small_fs / "out" / "mlflow.db").exists()


def test_a_read_only_output_dir_stops_train_before_training(toy, small_fs):
    corpus, spec = toy
    (small_fs / "out").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    assert_refused(train(spec, small_fs / "out"), f"output_dir {small_fs / 'out'}", "Read-only file system")


def test_less_free_space_than_the_floor_stops_train_before_training(toy, small_fs):
    # 1 MiB free against the default floor of 512 MiB: the message says both and how to lower it.
    corpus, spec = toy
    line = assert_refused(
        train(spec, small_fs / "out"), f"output_dir {small_fs / 'out'}", "a job needs at least 512 MiB"
    )
    assert "MiB free" in line and "BIONER_MIN_FREE_MB" in line
    assert not (small_fs / "out" / "mlflow.db").exists()


def test_the_free_space_floor_applies_on_any_disk(tmp_path, toy, monkeypatch):
    # Without root (no tmpfs), the same check against this machine's disk with a floor above it.
    corpus, spec = toy
    monkeypatch.setenv("BIONER_MIN_FREE_MB", str(10**12))
    assert_refused(train(spec, tmp_path / "out"), "MiB free, a job needs at least 1000000000000 MiB")
    monkeypatch.setenv("BIONER_MIN_FREE_MB", "lots")
    assert_refused(train(spec, tmp_path / "out"), "$BIONER_MIN_FREE_MB='lots': expected a number")
