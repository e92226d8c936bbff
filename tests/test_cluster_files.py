"""The cluster set-up files parse, and the versions they pin are pyproject.toml's."""

from __future__ import annotations

import re

import pytest
import tomllib
import yaml
from packaging.specifiers import SpecifierSet

from helpers import REPO

CLUSTER = REPO / "cluster"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT_VERSION = PYPROJECT["project"]["version"]
RAY_SPEC = SpecifierSet(
    next(re.sub(r"^ray(\[[^\]]*\])?", "", d) for d in PYPROJECT["project"]["dependencies"] if re.match(r"ray\b", d))
)
YAMLS = sorted(CLUSTER.rglob("*.yaml")) + sorted(CLUSTER.rglob("*.yml"))
PINNED = sorted(YAMLS + list(CLUSTER.rglob("Dockerfile")))


def _ray_versions(text: str) -> set[str]:
    """Every Ray version a file names: pip pins, image tags and KubeRay's rayVersion."""
    pins = re.findall(r"ray\[[^\]]*\]==([\w.]+)", text)
    tags = re.findall(r"rayproject/ray(?:-ml)?:([\d.]+)", text)
    tags += re.findall(r"-ray([\d.]*\d)\b", text)
    fields = re.findall(r"rayVersion:\s*\"?([\d.]+)", text)
    return set(pins + tags + fields)


def _project_versions(text: str) -> set[str]:
    pins = re.findall(r"bioner-mrc==([\w.]+)", text)
    wheels = re.findall(r"bioner_mrc-([\w.]+?)-py3", text)
    tags = re.findall(r"bioner-mrc:([\d.]+)-ray", text)
    git = re.findall(r"refs/tags/v([\d.]+)\.zip", text)
    return set(pins + wheels + tags + git)


def test_the_cluster_folder_has_the_set_ups():
    names = {p.relative_to(CLUSTER).as_posix() for p in PINNED}
    assert {"aws.yaml", "kuberay/raycluster.yaml", "kuberay/rayjob.yaml"} <= names


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.relative_to(CLUSTER).as_posix())
def test_yaml_parses(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs and all(isinstance(d, dict) for d in docs)


@pytest.mark.parametrize("path", PINNED, ids=lambda p: p.relative_to(CLUSTER).as_posix())
def test_pinned_versions_match_pyproject(path):
    text = path.read_text()
    ray, project = _ray_versions(text), _project_versions(text)
    assert ray, f"{path.name}: pins no Ray version"
    assert len(ray) == 1, f"{path.name}: several Ray versions {sorted(ray)}"
    assert next(iter(ray)) in RAY_SPEC, f"{path.name}: Ray {ray} outside pyproject's {RAY_SPEC}"
    assert project == {PROJECT_VERSION}, (
        f"{path.name}: project versions {sorted(project)} != pyproject's {PROJECT_VERSION}"
    )


def test_every_file_pins_the_same_ray():
    found = set().union(*(_ray_versions(p.read_text()) for p in PINNED))
    assert len(found) == 1, found


def test_aws_cluster_keeps_the_dashboard_off_the_internet():
    cfg = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    ports = {(r["FromPort"], r["ToPort"]) for r in cfg["provider"]["security_group"]["IpPermissions"]}
    assert ports == {(22, 22)}
    head = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "RAY_AUTH_MODE=token" in head
    assert "RAY_AUTH_MODE=token" in " ".join(cfg["worker_start_ray_commands"])
    assert cfg["available_node_types"][cfg["head_node_type"]]["resources"] == {"CPU": 0}
    gpu = [t for n, t in cfg["available_node_types"].items() if n != cfg["head_node_type"]]
    assert gpu and all(t["min_workers"] == 0 for t in gpu)


def test_kuberay_gpu_workers_request_gpus_and_take_mlflow_from_a_secret():
    for name in ("raycluster.yaml", "rayjob.yaml"):
        docs = list(yaml.safe_load_all((CLUSTER / "kuberay" / name).read_text()))
        ray = next(d for d in docs if d["kind"] in ("RayCluster", "RayJob"))
        spec = ray["spec"].get("rayClusterSpec", ray["spec"])
        assert spec["authOptions"] == {"mode": "token"}
        assert spec["headGroupSpec"]["serviceType"] == "ClusterIP"
        for group in spec["workerGroupSpecs"]:
            (c,) = group["template"]["spec"]["containers"]
            assert c["resources"]["limits"]["nvidia.com/gpu"] == c["resources"]["requests"]["nvidia.com/gpu"] == "1"
            env = {e["name"]: e for e in c["env"]}
            assert "secretKeyRef" in env["MLFLOW_TRACKING_URI"]["valueFrom"]


# The submission rules of bioner.cluster, without a cluster.


def test_tracking_uri_reaches_tracked_commands_once():
    from bioner.cluster import entrypoint

    uri = "http://mlflow:5000"
    assert entrypoint(["tune", "c.yaml"], uri) == f"bioner tune c.yaml --set tracking_uri={uri}"
    assert (
        entrypoint(["sweep", "t5.yaml", "--resume"], uri) == f"bioner sweep t5.yaml --resume --set tracking_uri={uri}"
    )
    assert (
        entrypoint(["tune", "c.yaml", "--set", "tracking_uri=http://x"], uri)
        == "bioner tune c.yaml --set tracking_uri=http://x"
    )
    assert entrypoint(["datasets", "check", "a b.yaml"], uri) == "bioner datasets check 'a b.yaml'"
    assert entrypoint(["bioner", "train", "c.yaml"], None) == "bioner train c.yaml"
    assert (
        entrypoint(["serve", "--model", "models:/m@champion"], uri)
        == f"bioner serve --model models:/m@champion --tracking-uri {uri}"
    )
    assert (
        entrypoint(["serve", "--model", "m", "--tracking-uri", "http://x"], uri)
        == "bioner serve --model m --tracking-uri http://x"
    )


@pytest.mark.parametrize("uri", ["sqlite:///outputs/mlflow.db", "file:mlruns", "mlruns"])
def test_a_relative_store_is_refused(uri):
    from bioner.cluster import tracking_warning
    from bioner.errors import ConfigError

    with pytest.raises(ConfigError, match="relative store path"):
        tracking_warning(uri, "http://10.0.0.1:8265", "tune")


def test_tracking_warnings():
    from bioner.cluster import tracking_warning

    assert "no --tracking-uri" in tracking_warning(None, "http://127.0.0.1:8265", "tune")
    assert tracking_warning(None, "http://127.0.0.1:8265", "datasets") is None
    assert "models:/" in tracking_warning(None, "http://127.0.0.1:8265", "serve")
    assert "cluster's machines" in tracking_warning("sqlite:////srv/mlflow.db", "http://127.0.0.1:8265", "tune")
    assert "loopback" in tracking_warning("http://127.0.0.1:5000", "http://10.0.0.1:8265", "tune")
    assert tracking_warning("http://127.0.0.1:5000", "http://127.0.0.1:8265", "tune") is None


def test_address_comes_from_the_option_then_the_environment(monkeypatch):
    from bioner.cluster import resolve_address
    from bioner.errors import BionerError

    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(BionerError, match="no cluster address"):
        resolve_address(None)
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265/")
    assert resolve_address(None) == "http://head:8265"
    assert resolve_address("https://ray.example.org") == "https://ray.example.org"
    with pytest.raises(BionerError, match="expected http"):
        resolve_address("ftp://head")


def test_the_config_must_travel_with_the_working_dir(tmp_path):
    from bioner.cluster import check_config_travels
    from bioner.errors import BionerError

    (tmp_path / "c.yaml").write_text("dataset: ncbi-disease\n")
    check_config_travels(["tune", "c.yaml"], tmp_path)
    with pytest.raises(BionerError, match="not found under the working directory"):
        check_config_travels(["tune", "elsewhere.yaml"], tmp_path)
