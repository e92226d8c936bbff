"""`bioner annotate` in this process, on the session's local Ray and a real SQLite MLflow store, with a tiny
BERT whose random heads are decisive (mentions everywhere): a mixed-format corpus (JSON lines, PubTator,
BioC XML, PubMed XML, Parquet) tagged, its rows equal to `bioner predict --format` and to
infer.documents.annotate on the same documents; the manifest against the registry; `--output-format same`;
bad records (stop, --max-errors, the text limit); and every input refused before Ray starts."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

import pytest

from helpers import EXPERIMENTS, bioner, save_random_model

NCBI_DOCS = EXPERIMENTS / "corpora" / "NCBI-disease-PubTator" / "test.pubtator"
ROW_KEYS = ("doc_id", "passage", "start", "end", "text", "type", "score")


def refused(res: tuple[int, str, str], *needles: str) -> str:
    code, out, err = res
    lines = err.strip().splitlines()
    assert code == 2, (code, err[-2000:])
    assert lines and "Traceback" not in out + err, err
    for n in needles:
        assert n in lines[-1], (n, lines[-1])
    return lines[-1]


def abstracts(n: int, skip: int = 0) -> list[tuple[str, str, str]]:
    """(PMID, title, abstract) of NCBI-disease test documents."""
    out = []
    for block in NCBI_DOCS.read_text(encoding="utf-8").split("\n\n")[skip : skip + n]:
        lines = block.strip("\n").split("\n")
        pmid, _, title = lines[0].split("|", 2)
        out.append((pmid, title, lines[1].split("|", 2)[2]))
    return out


def pubmed_xml(docs) -> bytes:
    """A PubMed baseline file by hand: the first article's title holds markup, its abstract labelled parts."""
    arts = []
    for k, (pmid, title, abstract) in enumerate(docs):
        half = len(abstract) // 2
        cut = abstract.index(" ", half)
        if k == 0:
            title_xml = f"<ArticleTitle>{title[:10]}<i>{title[10:20]}</i>{title[20:]}</ArticleTitle>"
            parts = (
                f'<AbstractText Label="BACKGROUND">{abstract[:cut]}</AbstractText>'
                f'<AbstractText Label="RESULTS">{abstract[cut + 1 :]}</AbstractText>'
            )
        else:
            title_xml, parts = f"<ArticleTitle>{title}</ArticleTitle>", f"<AbstractText>{abstract}</AbstractText>"
        arts.append(
            f'<PubmedArticle><MedlineCitation Status="MEDLINE"><PMID Version="1">{pmid}</PMID><Article>'
            f"<Journal><Title>J</Title></Journal>{title_xml}<Abstract>{parts}</Abstract></Article>"
            f"<CommentsCorrectionsList><CommentsCorrections><PMID>1</PMID></CommentsCorrections>"
            f"</CommentsCorrectionsList></MedlineCitation></PubmedArticle>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<!DOCTYPE PubmedArticleSet PUBLIC "-//NLM//DTD PubMedArticle, '
        '1st January 2025//EN" "https://dtd.nlm.nih.gov/ncbi/pubmed/out/pubmed_250101.dtd">\n<PubmedArticleSet>\n'
        + "\n".join(arts)
        + "\n</PubmedArticleSet>\n"
    ).encode("utf-8")


def bioc_xml(docs) -> str:
    out = ['<?xml version="1.0" encoding="UTF-8"?>', "<collection><source>test</source><date>2026</date><key>k</key>"]
    for pmid, title, abstract in docs:
        out.append(
            f'<document><id>{pmid}</id><passage><infon key="type">title</infon><offset>0</offset>'
            f'<text>{title}</text></passage><passage><infon key="type">abstract</infon>'
            f"<offset>{len(title) + 1}</offset><text>{abstract}</text></passage></document>"
        )
    return "\n".join(out) + "\n</collection>\n"


def write_mixed(folder: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    docs = abstracts(12)
    jl = [{"id": p, "text": f"{t} {a}"} for p, t, a in docs[:2]]
    jl.append(
        {
            "id": docs[2][0],
            "passages": [{"offset": 0, "text": docs[2][1]}, {"offset": len(docs[2][1]) + 1, "text": docs[2][2]}],
        }
    )
    (folder / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in jl), encoding="utf-8")
    blocks = NCBI_DOCS.read_text(encoding="utf-8").split("\n\n")[3:6]  # with their gold mention lines
    (folder / "b.pubtator").write_text("\n\n".join(blocks) + "\n\n", encoding="utf-8")
    (folder / "c.bioc.xml").write_text(bioc_xml(docs[6:8]), encoding="utf-8")
    (folder / "pubmed25n0001.xml.gz").write_bytes(gzip.compress(pubmed_xml(docs[8:10])))
    pq.write_table(
        pa.table({"id": [p for p, _, _ in docs[10:12]], "text": [f"{t} {a}" for _, t, a in docs[10:12]]}),
        folder / "e.parquet",
    )
    return folder


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_bert):
    folder = tmp_path_factory.mktemp("annotate") / "model"
    return str(save_random_model(folder, tiny_bert, max_length=64, seed=5, head_scale=50))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_mixed(tmp_path_factory.mktemp("mixed") / "corpus")


@pytest.fixture(scope="module")
def registered(tmp_path_factory, model):
    """The model logged and registered in a store of its own: models:/annotate-toy@champion."""
    import mlflow

    from bioner.tracking.models import log_model
    from bioner.tracking.store import use_experiment
    from conftest import tracking_uri_variable_kept

    d = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{d / 'mlflow.db'}"
    with tracking_uri_variable_kept():
        exp = use_experiment(uri, "models", d)
        with mlflow.start_run(experiment_id=exp) as run:
            info = log_model(Path(model))
        client = mlflow.MlflowClient(uri)
        mv = mlflow.register_model(info.model_uri, "annotate-toy")
        client.set_registered_model_alias("annotate-toy", "champion", mv.version)
    return uri, str(mv.version), run.info.run_id


def rows_of(folder: Path) -> list[tuple]:
    import pyarrow.parquet as pq

    out = []
    for f in sorted((folder / "mentions").glob("*.parquet")):
        t = pq.read_table(f)
        out += [tuple(r[k] for k in ROW_KEYS) + (r["source_file"],) for r in t.to_pylist()]
    return sorted(out)


def expected_rows(model: str, files: list[Path]) -> list[tuple]:
    """What infer.documents.annotate gives on each file's documents, read as the job reads them."""
    from bioner.infer.documents import annotate
    from bioner.infer.tagger import Tagger
    from bioner.studies.annotate.inputs import Shard, detect_format, read_shard

    tagger = Tagger.load(model, precision="int8")
    out = []
    for f in files:
        got = read_shard(Shard(0, str(f), f.stat().st_size, detect_format(str(f))), 1_000_000, None)
        assert got.fatal is None, got.fatal
        for d in annotate(tagger, got.documents):
            for i, p in enumerate(d.passages):
                out += [(d.id, i, m.start, m.end, m.text, m.type, m.score, str(f)) for m in p.mentions]
    return sorted(out)


def test_a_mixed_corpus_is_tagged_as_predict_tags_it_and_recorded_against_the_registry(
    ray_local, tmp_path, corpus, model, registered
):
    from mlflow import MlflowClient

    uri, version, run_id = registered
    out = tmp_path / "out"
    job = ["annotate", "--model", "models:/annotate-toy@champion", "--input", str(corpus), "--output", str(out)]
    code, stdout, stderr = bioner(*job, "--tracking-uri", uri, "--quiet")
    assert code == 0, stderr[-3000:]
    from mlflow.tracking._model_registry import utils as registry_utils

    # the job's store is its own: the caller's default registry is not moved to it
    assert uri not in (os.environ.get("MLFLOW_REGISTRY_URI"), registry_utils._registry_uri)
    files = sorted(corpus.iterdir())
    rows = rows_of(out)
    assert rows == expected_rows(model, files)
    assert len(rows) > 100 and {r[-1] for r in rows} == {str(f) for f in files}
    import pyarrow.parquet as pq

    assert pq.read_table(out / "mentions").num_rows == len(rows)  # the folder reads as one dataset

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["documents"] == 12 and manifest["mentions"] == len(rows)
    assert manifest["model"] == {
        "uri": "models:/annotate-toy@champion",
        "resolved": f"models:/annotate-toy/{version}",
        "name": "annotate-toy",
        "version": version,
        "run_id": run_id,
    }
    formats = ["jsonl", "pubtator", "bioc", "parquet", "pubmed"]
    assert [(i["input"], i["size"], i["format"]) for i in manifest["inputs"]] == [
        (str(f), f.stat().st_size, fmt) for f, fmt in zip(files, formats, strict=True)
    ]
    assert all(i["sha256"] == hashlib.sha256(Path(i["input"]).read_bytes()).hexdigest() for i in manifest["inputs"])
    assert manifest["sentences"] > manifest["documents"] and manifest["errors"] == 0 and manifest["documents_per_s"] > 0
    assert "12 documents" in stdout

    client = MlflowClient(uri)
    run = client.get_run(manifest["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["bioner.kind"] == "annotate"
    assert run.data.tags["model.version"] == version and run.data.tags["model.run_id"] == run_id
    assert run.data.metrics["documents"] == 12 and run.data.metrics["mentions"] == len(rows)
    assert [m.value for m in client.get_metric_history(run.info.run_id, "documents_done")][-1] == 12
    assert "manifest.json" in [a.path for a in client.list_artifacts(run.info.run_id)]

    # PubMed XML: the PubTator layout, markup and labels dropped, parts joined by a space
    ((pmid, title, abstract),) = abstracts(1, skip=8)
    from bioner.studies.annotate.inputs import Shard, read_shard

    f = corpus / "pubmed25n0001.xml.gz"
    doc = read_shard(Shard(0, str(f), f.stat().st_size, "pubmed"), 10**6, None).documents[0]
    title, abstract = title.strip(), abstract.strip()  # each part's edge spaces are dropped
    assert doc.id == pmid and [(p.offset, p.text) for p in doc.passages] == [(0, title), (len(title) + 1, abstract)]

    # the rows of the JSON lines and PubTator files are those `bioner predict --format` writes
    from bioner.data.formats import read_documents

    for name, fmt in (("a.jsonl", "jsonl"), ("b.pubtator", "pubtator")):
        dst = tmp_path / f"predicted.{name}"
        code, _, stderr = bioner(
            "predict", "--model", model, "--input", str(corpus / name), "--format", fmt, "--output", str(dst)
        )
        assert code == 0, stderr
        predicted = sorted(
            (d.id, i, m.start, m.end, m.text, m.type, m.score, str(corpus / name))
            for d in read_documents(dst, fmt)
            for i, p in enumerate(d.passages)
            for m in p.mentions
        )
        assert predicted == [r for r in rows if r[-1] == str(corpus / name)]

    # the same command again: the job is done, nothing runs; another job's folder is refused
    code, _, stderr = bioner(*job, "--tracking-uri", uri)
    assert code == 0 and "finished already" in stderr
    refused(
        bioner("annotate", "--model", model, "--input", str(corpus), "--output", str(out), "--tracking-uri", uri),
        str(out),
        "another job",
        "--overwrite",
    )


def test_output_format_same_writes_each_input_in_its_format_with_the_mentions(ray_local, tmp_path, corpus, model):
    from bioner.data.formats import read_documents

    out = tmp_path / "out"
    # file:// URIs: read, listed (a glob) and written through a pyarrow filesystem, as s3:// would be
    code, _, stderr = bioner(
        "annotate",
        "--model",
        model,
        "--input",
        f"file://{corpus}/b.pubtator",
        "--input",
        f"file://{corpus}/pubmed*.xml.gz",
        "--output",
        f"file://{out}",
        "--output-format",
        "same",
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--quiet",
    )
    assert code == 0, stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [i["input"] for i in manifest["inputs"]] == [
        f"file://{corpus}/b.pubtator",
        f"file://{corpus}/pubmed25n0001.xml.gz",
    ]
    assert manifest["inputs"][0]["sha256"] == hashlib.sha256((corpus / "b.pubtator").read_bytes()).hexdigest()
    assert sorted(p.name for p in (out / "documents").iterdir()) == ["b.pubtator", "pubmed25n0001.bioc.xml.gz"]
    assert not (out / "mentions").exists()
    got = sorted(
        (d.id, m.start, m.end, m.text, m.score)
        for name, fmt in (("b.pubtator", "pubtator"), ("pubmed25n0001.bioc.xml.gz", "bioc"))
        for d in read_documents(out / "documents" / name, fmt)
        for m in d.mentions
    )
    want = expected_rows(model, [corpus / "b.pubtator", corpus / "pubmed25n0001.xml.gz"])
    assert got == sorted((r[0], r[2], r[3], r[4], r[6]) for r in want)


def test_a_bad_record_stops_the_job_with_its_line_and_max_errors_lists_them(ray_local, tmp_path, model, monkeypatch):
    good = [json.dumps({"id": f"d{i}", "text": f"Familial adenomatous polyposis case {i} ."}) for i in range(6)]
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jsonl").write_text("\n".join(good[:2] + ['{"id": "x", "text": 3}'] + good[2:4]) + "\n", encoding="utf-8")
    long_doc = "d9|t|" + "word " * 40 + "\nd9|a|Short.\n"
    blocks = [f"p{i}|t|Colon cancer number {i} .\np{i}|a|It is a disease .\n" for i in range(3)]
    (src / "b.pubtator").write_text(
        blocks[0] + "\n" + long_doc + "\n" + blocks[1] + "\n" + blocks[2] + "\n", encoding="utf-8"
    )
    monkeypatch.setenv("BIONER_MAX_TEXT_CHARS", "100")  # the title of d9 is over it: a bad record
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"

    out = tmp_path / "stop"
    line = refused(
        bioner(
            "annotate",
            "--model",
            model,
            "--input",
            str(src / "a.jsonl"),
            "--output",
            str(out),
            "--tracking-uri",
            store,
            "--quiet",
        ),
        f"{src / 'a.jsonl'}:3:",
    )
    assert "text" in line
    assert not list((out / "mentions").glob("*.parquet")) and not list((out / "_shards").iterdir())
    assert json.loads((out / "manifest.json").read_text())["status"] == "failed"

    out = tmp_path / "go-on"
    code, _, stderr = bioner(
        "annotate",
        "--model",
        model,
        "--input",
        str(src),
        "--output",
        str(out),
        "--max-errors",
        "2",
        "--tracking-uri",
        store,
        "--quiet",
    )
    assert code == 0, stderr[-3000:]
    errors = [json.loads(x) for x in (out / "errors.jsonl").read_text().splitlines()]
    assert [(e["file"], e["line"]) for e in errors] == [(str(src / "a.jsonl"), 3), (str(src / "b.pubtator"), 4)]
    assert "limit" in errors[1]["reason"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["errors"] == 2 and manifest["documents"] == 4 + 3
    assert {r[0] for r in rows_of(out)} <= {f"d{i}" for i in range(4)} | {f"p{i}" for i in range(3)}

    out = tmp_path / "past"
    refused(
        bioner(
            "annotate",
            "--model",
            model,
            "--input",
            str(src),
            "--output",
            str(out),
            "--max-errors",
            "1",
            "--tracking-uri",
            store,
            "--quiet",
        ),
        "more than --max-errors 1",
        "errors.jsonl",
    )
    assert len((out / "errors.jsonl").read_text().splitlines()) >= 2


def test_bad_inputs_are_refused_with_one_line_before_ray_starts(no_ray_in_process, tmp_path, model, corpus):
    """With no Ray in this process, every refusal leaves it so: the input is checked before Ray starts."""
    import ray

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    base = ["annotate", "--model", model, "--tracking-uri", store]
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "notes.txt").write_text("x\n")
    (tmp_path / "folder").mkdir()
    refused(bioner(*base, "--input", str(tmp_path / "empty.jsonl"), "--output", str(tmp_path / "o")), "empty input")
    refused(bioner(*base, "--input", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "o")), "not found")
    refused(bioner(*base, "--input", str(tmp_path / "folder"), "--output", str(tmp_path / "o")), "empty folder")
    refused(bioner(*base, "--input", str(tmp_path / "*.nothing"), "--output", str(tmp_path / "o")), "no file matches")
    refused(
        bioner(*base, "--input", str(tmp_path / "notes.txt"), "--output", str(tmp_path / "o")),
        "notes.txt",
        "'text' or 'pubtator'",
    )
    refused(
        bioner(*base, "--input", str(corpus / "a.jsonl"), "--output", str(tmp_path / "o"), "--format", "csv"),
        "--format csv",
    )
    refused(
        bioner(*base, "--input", str(corpus / "a.jsonl"), "--output", str(tmp_path / "o"), "--resume"),
        "no job to resume",
    )
    refused(
        bioner(*base, "--input", str(corpus / "a.jsonl"), "--output", str(tmp_path / "o"), "--types", "Gene"),
        "--types Gene",
    )
    refused(
        bioner(
            "annotate",
            "--model",
            "models:/nope@champion",
            "--tracking-uri",
            store,
            "--input",
            str(corpus / "a.jsonl"),
            "--output",
            str(tmp_path / "o"),
        ),
        "models:/nope@champion",
    )
    refused(
        bioner(
            "annotate",
            "--model",
            str(tmp_path / "no-model"),
            "--tracking-uri",
            store,
            "--input",
            str(corpus / "a.jsonl"),
            "--output",
            str(tmp_path / "o"),
        ),
        "no-model",
    )
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text(
        json.dumps(
            {"job": {"model": "x", "files": [], "output_format": "parquet", "types": None}, "status": "finished"}
        )
    )
    refused(bioner(*base, "--input", str(corpus / "a.jsonl"), "--output", str(other)), "another job", "--overwrite")
    (tmp_path / "stray" / "mentions").mkdir(parents=True)
    refused(bioner(*base, "--input", str(corpus / "a.jsonl"), "--output", str(tmp_path / "stray")), "unknown job")
    refused(
        bioner(
            *base,
            "--input",
            str(corpus / "a.jsonl"),
            "--output",
            str(tmp_path / "o"),
            "--actors",
            "2",
            "--max-actors",
            "3",
        ),
        "--actors",
    )
    assert not ray.is_initialized(), "a refused job started Ray"
