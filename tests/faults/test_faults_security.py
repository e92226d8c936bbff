"""Security defaults: no pickle, no remote code, servers on 127.0.0.1, no path out of output_dir."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bioner.config import TrainConfig
from bioner.errors import ConfigError
from helpers import REPO, is_loopback

PACKAGE = REPO / "platform" / "bioner"


def _code_lines():
    for path in sorted(PACKAGE.rglob("*.py")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if code.strip():
                yield f"{path.relative_to(REPO)}:{n}", code


def test_no_pickle_and_no_torch_load_without_weights_only():
    bad = []
    for where, code in _code_lines():
        if re.search(
            r"\b(import|from)\s+(c?pickle|dill|joblib|cloudpickle)\b|\b(c?pickle|dill|cloudpickle)\.loads?\(", code
        ):
            bad.append(f"{where}: {code.strip()}")
        if "torch.load(" in code and "weights_only=True" not in code:
            bad.append(f"{where}: {code.strip()}")
    assert bad == []


def test_trust_remote_code_is_off_by_default_and_remote_code_never_runs(tmp_path):
    """A local "encoder" whose config asks for its own Python code: without trust_remote_code
    the code is not imported (its side effect, a marker file, never appears)."""
    from bioner.model import build_model

    assert TrainConfig().trust_remote_code is False
    enc = tmp_path / "evil"
    enc.mkdir()
    marker = tmp_path / "executed"
    (enc / "config.json").write_text(
        '{"model_type": "evil", "architectures": ["EvilModel"], "hidden_size": 8,'
        ' "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}}'
    )
    (enc / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    with pytest.raises(ValueError, match="trust_remote_code"):  # transformers refuses to import it
        build_model(str(enc), 3)
    assert not marker.exists()


@pytest.fixture(scope="module")
def ray_sockets():
    """The listening sockets of a local Ray started by bioner, and its dashboard port."""
    import psutil
    import ray

    from bioner.train.local_ray import start_local_ray

    ray.shutdown()
    start_local_ray(num_cpus=1, log_to_driver=False, logging_level="ERROR")
    try:
        dashboard = ray._private.worker.global_worker.node.address_info["webui_url"]
        ours = {p.pid for p in psutil.Process().children(recursive=True)}
        listening = [
            (c.laddr.ip, c.laddr.port)
            for c in psutil.net_connections("inet")
            if c.status == psutil.CONN_LISTEN and c.pid in ours
        ]
    finally:
        ray.shutdown()
    return dashboard, listening


def test_ray_dashboard_and_jobs_api_listen_on_127_0_0_1(ray_sockets):
    """The dashboard serves the Jobs API, which runs code for whoever reaches it."""
    dashboard, listening = ray_sockets
    port = int(dashboard.rsplit(":", 1)[1])
    assert dashboard.startswith("127.0.0.1:")
    assert [ip for ip, p in listening if p == port] == ["127.0.0.1"]


def test_every_local_ray_socket_listens_on_loopback_only(ray_sockets):
    _, listening = ray_sockets
    assert listening and [a for a in listening if not is_loopback(a[0])] == []


def test_commands_and_docs_bind_servers_to_127_0_0_1():
    """Every server command we print or document names 127.0.0.1 (never 0.0.0.0)."""
    texts = {p: p.read_text(encoding="utf-8") for p in [REPO / "README.md", REPO / "Makefile", *PACKAGE.rglob("*.py")]}
    for path, text in texts.items():
        assert "0.0.0.0" not in text, path
        for cmd in re.findall(r"mlflow (?:ui|server|models serve) -[^\n`\"]*", text):
            assert re.search(r"(--host|-h) 127\.0\.0\.1", cmd), f"{path}: {cmd}"


@pytest.mark.parametrize("key", ["experiment", "run_name"])
@pytest.mark.parametrize("value", ["../outside", "..", ".", "a/../../b", "/etc/x", "a\\..\\b", "a\x00b"])
def test_names_that_would_leave_the_output_dir_are_refused(key, value):
    with pytest.raises(Exception) as e:
        TrainConfig(**{key: value})
    assert key in str(e.value)


def test_every_path_the_job_writes_stays_under_output_dir(tmp_path):
    """The folders a job and `--resume` build from user strings resolve inside output_dir."""
    from bioner.config import load_config
    from bioner.studies.jobs import jobs_dir

    out = tmp_path / "out"
    cfg = load_config(TrainConfig, None, [f"output_dir={out}", "experiment=my exp..v2", "run_name=r1"])
    p = jobs_dir(out, "train", cfg.experiment).resolve()
    assert p.is_relative_to(out.resolve())
    with pytest.raises(ConfigError, match="experiment"):
        load_config(TrainConfig, None, [f"output_dir={out}", "experiment=../../etc"])


def test_a_dataset_spec_cannot_name_a_path_like_type_or_dataset(tmp_path):
    from bioner.data.specs import load_spec

    for body in (
        "name: ../x\ncorpus: c\nentity_types:\n  D: {wikipedia: w, annotation: a}\n",
        "name: x\ncorpus: c\nentity_types:\n  a/b: {wikipedia: w, annotation: a}\n",
    ):
        spec = Path(tmp_path / "s.yaml")
        spec.write_text(body)
        with pytest.raises(ConfigError):
            load_spec(spec)
