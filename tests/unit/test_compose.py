"""compose.yaml: Docker does not run here, so check that everything it names exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main
import yaml

from finsignal.cli import app

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]


def cli_commands() -> set[tuple[str, ...]]:
    """Every command path the `finsignal` CLI accepts, e.g. ('worker',), ('ingest', 'news')."""
    group = typer.main.get_command(app)
    paths: set[tuple[str, ...]] = set()

    def walk(cmd, prefix: tuple[str, ...]) -> None:
        for name, sub in getattr(cmd, "commands", {}).items():
            paths.add((*prefix, name))
            walk(sub, (*prefix, name))

    walk(group, ())
    return paths


def test_core_services_are_present():
    assert {"kafka", "redis", "worker"} <= set(SERVICES)
    assert "KAFKA_PROCESS_ROLES" in SERVICES["kafka"]["environment"]  # KRaft, no ZooKeeper


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_is_complete(name):
    svc = SERVICES[name]
    assert "image" in svc or "build" in svc
    assert "healthcheck" in svc, f"{name} has no healthcheck"
    assert svc.get("restart") in {"always", "unless-stopped", "on-failure"}
    for dep in svc.get("depends_on", {}):
        assert dep in SERVICES, f"{name} depends on unknown service {dep}"
    for port in svc.get("ports", []):
        assert re.fullmatch(r"\d{1,5}:\d{1,5}", str(port)), port
        assert all(0 < int(p) < 65536 for p in str(port).split(":"))
    for volume in svc.get("volumes", []):
        source = volume.split(":")[0]
        if not source.startswith((".", "/")):
            assert source in COMPOSE.get("volumes", {}), f"{name} uses undeclared volume {source}"


@pytest.mark.parametrize("name", sorted(n for n, s in SERVICES.items() if "build" in s))
def test_finsignal_services_build_from_the_repo_and_run_real_commands(name):
    svc = SERVICES[name]
    context = ROOT / svc["build"]["context"]
    assert (context / svc["build"].get("dockerfile", "Dockerfile")).is_file()
    command = tuple(svc["command"])
    known = cli_commands()
    assert any(command[: len(path)] == path for path in known), f"{name}: `finsignal {' '.join(command)}` unknown"
    for copied in re.findall(r"^COPY (\S+) ", (context / "Dockerfile").read_text(), flags=re.M):
        assert (context / copied).exists(), f"Dockerfile copies missing {copied}"


# --- the compose specification, Prometheus and Grafana ---------------------------------------------------------

DEPLOY = ROOT / "deploy"


def compose_schema() -> dict:
    """The Compose Specification JSON schema vendored from the docker-compose 1.29.2 wheel (compose/config/
    compose_spec.json). It predates the top-level `name` key (added to the spec in 2022): allowed here by hand."""
    import json

    schema = json.loads((DEPLOY / "compose-spec.json").read_text())
    schema["properties"]["name"] = {"type": "string"}
    return schema


def test_compose_file_is_valid_against_the_compose_specification():
    from jsonschema import Draft201909Validator

    validator = Draft201909Validator(compose_schema())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(COMPOSE)]
    assert errors == []


def test_the_schema_check_catches_a_misspelled_key():
    from jsonschema import Draft201909Validator

    broken = {**COMPOSE, "services": {**SERVICES, "worker": {**SERVICES["worker"], "restart_policy": "always"}}}
    assert list(Draft201909Validator(compose_schema()).iter_errors(broken))


def test_every_bind_mount_exists_in_the_repo():
    for name, svc in SERVICES.items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def metrics_port(svc: dict) -> int | None:
    """The port a finsignal service serves /metrics on, from its environment."""
    env = svc.get("environment", {})
    for key in ("FINSIGNAL_WORKER_METRICS_PORT", "FINSIGNAL_INGEST_METRICS_PORT", "FINSIGNAL_GATEWAY_PORT"):
        if key in env:
            return int(env[key])
    return None


def test_prometheus_scrapes_every_finsignal_service_on_its_metrics_port():
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    expected = {f"{name}:{metrics_port(svc)}" for name, svc in SERVICES.items() if "build" in svc}
    assert None not in {metrics_port(svc) for svc in SERVICES.values() if "build" in svc}
    assert expected <= targets
    for target in targets - expected - {"localhost:9090"}:
        raise AssertionError(f"prometheus scrapes {target}, which is no finsignal service's metrics port")
    for name, svc in SERVICES.items():  # the healthcheck probes the same port
        if "build" in svc:
            assert str(metrics_port(svc)) in " ".join(svc["healthcheck"]["test"]), name


def defined_metric_names() -> set[str]:
    """Every series name the code's Prometheus metrics can expose."""
    import prometheus_client

    import consumers.gateway.metrics
    import ingest.metrics
    import signals.metrics  # noqa: F401 - imported to register their metrics

    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    names: set[str] = set()
    for metric in prometheus_client.REGISTRY.collect():
        if metric.name.startswith("finsignal_"):
            names.update(metric.name + s for s in suffixes.get(metric.type, [""]))
    return names


def test_grafana_dashboard_uses_only_metrics_the_code_defines_and_covers_the_essentials():
    import json

    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "finsignal.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {m for e in exprs for m in re.findall(r"\bfinsignal_[a-z0-9_]+", e)}
    assert used - defined_metric_names() == set()
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("lag", "latency", "throughput", "dead letters", "reconnects"):
        assert topic in titles, f"no {topic} panel"
    assert all(t["datasource"]["uid"] == "prometheus" for p in dashboard["panels"] for t in p["targets"])


def test_grafana_provisioning_points_at_the_dashboard_and_prometheus():
    grafana = SERVICES["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"] if v.startswith("."))
    provisioning = ROOT / next(src for src, dst in mounts.items() if dst == "/etc/grafana/provisioning")
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert datasource["uid"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    assert "prometheus" in SERVICES
    provider = yaml.safe_load((provisioning / "dashboards" / "finsignal.yml").read_text())["providers"][0]
    dashboards = ROOT / next(src for src, dst in mounts.items() if dst == provider["options"]["path"])
    assert (dashboards / "finsignal.json").is_file()


def test_gpu_profile_runs_the_worker_on_vllm_and_the_image_has_the_extra():
    gpu = [(n, s) for n, s in SERVICES.items() if "gpu" in s.get("profiles", [])]
    assert gpu, "no gpu profile"
    name, svc = gpu[0]
    assert svc["command"] == ["worker"] and svc["environment"]["FINSIGNAL_WORKER_BACKEND"] == "vllm"
    extra = svc["build"]["args"]["FINSIGNAL_EXTRAS"]
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(rf"^{extra} = \[[^\]]*vllm", pyproject, flags=re.M | re.S), f"no [{extra}] extra with vllm"
    assert "FINSIGNAL_EXTRAS" in (ROOT / "Dockerfile").read_text()


def test_stateful_services_persist_and_redis_requires_a_password():
    assert "--appendonly" in SERVICES["redis"]["command"] and "--requirepass" in SERVICES["redis"]["command"]
    assert any(v.endswith(":/data") for v in SERVICES["redis"]["volumes"])
    kafka_dir = SERVICES["kafka"]["environment"]["KAFKA_LOG_DIRS"]
    assert any(v.endswith(f":{kafka_dir}") for v in SERVICES["kafka"]["volumes"])
    for name, svc in SERVICES.items():
        if "build" in svc:
            assert "FINSIGNAL_REDIS_PASSWORD" in svc["environment"], name


def test_prometheus_loads_the_alert_rules_and_the_drift_threshold_is_the_workers():
    from signals.settings import WorkerSettings

    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    mounts = dict(v.split(":")[:2] for v in SERVICES["prometheus"]["volumes"] if v.startswith("."))
    inside = {dst: src for src, dst in mounts.items()}
    assert config["rule_files"] and all(path in inside for path in config["rule_files"])
    rules = [r for path in config["rule_files"]
             for g in yaml.safe_load((ROOT / inside[path]).read_text())["groups"] for r in g["rules"]]
    drift = next(r for r in rules if r["alert"] == "FinsignalModelOutputDrift")
    threshold = float(re.search(r">\s*([0-9.]+)\s*$", drift["expr"]).group(1))
    assert threshold == WorkerSettings().drift_psi_alert
    used = {m for r in rules for m in re.findall(r"\bfinsignal_[a-z0-9_]+", r["expr"])}
    assert used and used - defined_metric_names() == set()


def test_dashboard_shows_shadow_agreement_flips_latency_and_drift():
    import json

    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "finsignal.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in ("finsignal_worker_shadow_agreement_ratio", "finsignal_worker_shadow_flips_total",
                   "finsignal_worker_model_seconds_bucket", "finsignal_worker_drift_psi"):
        assert metric in exprs, metric
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
