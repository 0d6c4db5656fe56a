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
