"""A real tiny sweep (2 variants x 2 seeds on Ray Tune, nested MLflow runs) and its report,
checked against MLflow and opened in headless Chromium."""

import asyncio
import base64
import csv
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from bioner.cli import app
from bioner.errors import ConfigError
from bioner.studies.sweep import run_sweep
from bioner.studies.sweep_config import grid, load_sweep
from helpers import REPO

pytestmark = pytest.mark.usefixtures("ray_local")
ARTIFACTS = Path(os.environ.get("BIONER_TEST_ARTIFACTS", REPO / "outputs" / "test-artifacts"))


@pytest.fixture(scope="module")
def swept(make_dataset, tiny_bert):
    d = make_dataset("synth", sizes=(40, 12, 30)).parent
    (d / "sweep.yaml").write_text(f"""
experiment: sweep-test
output_dir: {d / "out"}
datasets: [synth.yaml]
encoder: {tiny_bert}
variants:
  single: {{beta: 0.0}}
  multi: {{beta: 1.0, query_source: annotation}}
profiles:
  cpu: {{seeds: 3, epochs: 5}}
epochs: 2
batch_size: 8
max_length: 48
learning_rate: 1.0e-3
eval_every_epoch: true
max_concurrent_trials: 2  # tiny cells are bound by process start-up, single-threaded: two at once take 60 % of the time
""")
    cfg = load_sweep(d / "sweep.yaml", ["seeds=2"])  # --set beats the profile block
    res = run_sweep(cfg, progress=False)
    return d, cfg, res


def test_sweep_writes_a_parent_and_one_finished_child_per_cell(swept):
    _, cfg, res = swept
    assert cfg.seeds == 2 and cfg.epochs == 2  # top level beats the profile block
    client = MlflowClient(res.tracking_uri)
    parent = client.get_run(res.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["bioner.kind"] == "sweep"
    assert parent.data.tags["sweep.baseline"] == "single" and res.cells == res.finished == 4
    kids = client.search_runs([res.experiment_id], f"tags.mlflow.parentRunId = '{res.parent_run_id}'")
    assert sorted(k.data.tags["sweep.cell"] for k in kids) == sorted(
        f"synth:{v}:f1:s{s}" for v in ("single", "multi") for s in (42, 43)
    )
    for k in kids:
        assert k.info.status == "FINISHED" and "test_f1" in k.data.metrics
        assert k.data.params["train_splits"] == "train,devel" and k.data.params["eval_split"] == "test"
        assert len({m.step for m in client.get_metric_history(k.info.run_id, "train_loss")}) == 2
        assert [a.path for a in client.list_artifacts(k.info.run_id, "predictions")] == [
            f"predictions/{k.info.run_id}.test.tsv"
        ]
        assert (k.data.params["beta"] == "0.0") == (k.data.tags["sweep.variant"] == "single")


def test_report_tables_hold_the_numbers_logged_in_mlflow(swept):
    d, _, res = swept
    out = d / "report"
    r = CliRunner().invoke(
        app, ["report", "--experiment", "sweep-test", "--out", str(out), "--tracking-uri", res.tracking_uri]
    )
    assert r.exit_code == 0, r.output
    client = MlflowClient(res.tracking_uri)
    kids = {
        k.info.run_id: k
        for k in client.search_runs([res.experiment_id], f"tags.mlflow.parentRunId = '{res.parent_run_id}'")
    }
    runs = list(csv.DictReader(open(out / "runs.csv")))
    assert len(runs) == 4
    for row in runs:
        m = kids[row["run_id"]].data.metrics
        for k in ("precision", "recall", "f1"):
            assert float(row[k]) == pytest.approx(m[f"test_{k}"], abs=1e-12)
    summary = {row["variant"]: row for row in csv.DictReader(open(out / "summary_raw.csv"))}
    md = (out / "report.md").read_text()
    for variant in ("single", "multi"):
        f1s = [k.data.metrics["test_f1"] for k in kids.values() if k.data.tags["sweep.variant"] == variant]
        mean = sum(f1s) / 2
        sd = abs(f1s[0] - f1s[1]) / 2**0.5
        assert float(summary[variant]["f1_mean"]) == pytest.approx(mean, abs=1e-12)
        assert float(summary[variant]["f1_sd"]) == pytest.approx(sd, abs=1e-12)
        assert f"{100 * mean:.2f} ± {100 * sd:.2f}" in md
        assert client.get_run(res.parent_run_id).data.metrics[f"test_f1_mean/synth/f1/{variant}"] == pytest.approx(
            mean, abs=1e-12
        )
    assert summary["single"]["p_value"] == "" and 0 <= float(summary["multi"]["p_value"]) <= 1
    assert summary["multi"]["paired_seeds"] == "2"
    logged = {a.path for a in client.list_artifacts(res.parent_run_id, "report")}
    assert {
        "report/report.html",
        "report/report.md",
        "report/runs.csv",
        "report/variants.png",
        "report/epochs.png",
    } <= logged


def test_resume_of_a_finished_sweep_trains_nothing_and_a_changed_grid_is_refused(swept):
    d, cfg, res = swept
    client = MlflowClient(res.tracking_uri)
    kids = client.search_runs([res.experiment_id], f"tags.mlflow.parentRunId = '{res.parent_run_id}'")
    before = {k.info.run_id: len(client.get_metric_history(k.info.run_id, "train_loss")) for k in kids}
    again = run_sweep(cfg, resume=True, progress=False)
    assert again.parent_run_id == res.parent_run_id and again.finished == 4
    assert {r: len(client.get_metric_history(r, "train_loss")) for r in before} == before
    with pytest.raises(ConfigError, match="grid differs"):
        run_sweep(load_sweep(d / "sweep.yaml", ["seeds=3"]), resume=True, progress=False)
    assert len(grid(load_sweep(d / "sweep.yaml", ["seeds=3"]))) == 6


# --------------------------------------------------------------------------- Chromium


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe:
        return exe
    r = subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"],
        capture_output=True,
        text=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    if r.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True)
        r = subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"],
            capture_output=True,
            text=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    exe = shutil.which("chromium")
    if not exe:
        pytest.skip(f"Debian's chromium could not be installed with apt-get: {r.stderr.strip().splitlines()[-1:]}")
    return exe


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """Headless Chromium driven over the DevTools protocol: console errors, DOM queries, screenshots."""

    def __init__(self, exe: str):
        import requests

        self.port = _free_port()
        self.profile = tempfile.mkdtemp(prefix="chromium-")
        self.proc = subprocess.Popen(
            [
                exe,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                f"--remote-debugging-port={self.port}",
                "--remote-debugging-address=127.0.0.1",
                f"--user-data-dir={self.profile}",
                "--window-size=1400,1000",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 60
        while True:
            try:
                pages = requests.get(f"http://127.0.0.1:{self.port}/json/list", timeout=2).json()
                self.ws_url = next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page")
                break
            except Exception:
                if time.time() > deadline or self.proc.poll() is not None:
                    self.close()
                    raise RuntimeError("chromium did not open its DevTools port") from None
                time.sleep(0.5)

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        shutil.rmtree(self.profile, ignore_errors=True)

    def open(self, url: str, probe: str, screenshot: Path | None = None) -> tuple[list[str], dict]:
        return asyncio.run(self._open(url, probe, screenshot))

    async def _open(self, url, probe, screenshot):
        import aiohttp

        errors, ids = [], iter(range(1, 10**6))
        async with aiohttp.ClientSession() as s, s.ws_connect(self.ws_url, max_msg_size=0) as ws:

            async def call(method, **params):
                i = next(ids)
                await ws.send_json({"id": i, "method": method, "params": params})
                while True:
                    msg = json.loads((await ws.receive()).data)
                    self._collect(msg, errors)
                    if msg.get("id") == i:
                        return msg.get("result", {})
                    if msg.get("method") == "Page.loadEventFired":
                        self.loaded = True

            self.loaded = False
            for domain in ("Page", "Runtime", "Log"):
                await call(f"{domain}.enable")
            await call("Page.navigate", url=url)
            while not self.loaded:
                msg = json.loads((await asyncio.wait_for(ws.receive(), 60)).data)
                self._collect(msg, errors)
                self.loaded = msg.get("method") == "Page.loadEventFired"
            result = await call("Runtime.evaluate", expression=probe, returnByValue=True)
            if screenshot is not None:
                shot = await call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                screenshot.write_bytes(base64.b64decode(shot["data"]))
        return errors, result["result"]["value"]

    @staticmethod
    def _collect(msg: dict, errors: list[str]) -> None:
        m, p = msg.get("method"), msg.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
        elif m == "Runtime.exceptionThrown":
            errors.append("exception: " + p["exceptionDetails"].get("text", ""))
        elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
            errors.append("log: " + p["entry"].get("text", ""))


PROBE = """JSON.parse(JSON.stringify({
  tables: Array.from(document.querySelectorAll('table')).map(t => t.rows.length),
  headings: Array.from(document.querySelectorAll('h2')).map(h => h.textContent),
  images: Array.from(document.images)
          .map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0, w: i.naturalWidth})),
  external: Array.from(document.querySelectorAll('[src],[href]'))
            .map(e => e.getAttribute('src') || e.getAttribute('href'))
            .filter(u => !u.startsWith('data:')),
}))"""


@pytest.fixture(scope="module")
def browser():
    b = Browser(_chromium())
    yield b
    b.close()


def test_report_html_opens_in_chromium_without_errors_and_shows_every_table_and_plot(swept, browser):
    d, _, _ = swept
    html = d / "report" / "report.html"
    if not html.exists():  # this test alone: make the report here
        CliRunner().invoke(
            app,
            [
                "report",
                "--experiment",
                "sweep-test",
                "--out",
                str(d / "report"),
                "--tracking-uri",
                swept[2].tracking_uri,
                "--no-log",
            ],
        )
    shot = ARTIFACTS / "sweep_report.png"
    errors, dom = browser.open(html.as_uri(), PROBE, shot)
    assert errors == []
    # meta + paper_table + summary + runs; every table has a header row and data rows
    assert len(dom["tables"]) == 4 and all(n >= 2 for n in dom["tables"])
    assert dom["tables"][3] == 1 + 4  # one row per cell
    assert {"paper_table", "summary", "runs", "test F1 by variant", "per-epoch curves"} <= set(dom["headings"])
    assert len(dom["images"]) == 2 and all(i["ok"] for i in dom["images"]), dom["images"]
    assert dom["external"] == []  # self-contained: nothing to fetch
    assert shot.stat().st_size > 10_000


def test_the_chromium_check_does_see_console_errors_and_broken_images(tmp_path, browser):
    page = tmp_path / "bad.html"
    page.write_text(
        "<html><body><table><tr><td>x</td></tr></table><img alt='gone' src='missing.png'>"
        "<script>console.error('boom')</script></body></html>"
    )
    errors, dom = browser.open(page.as_uri(), PROBE)
    assert any("boom" in e for e in errors) and dom["images"][0]["ok"] is False
