"""docker-compose.yml and the Dockerfile, read as Docker would read them (Docker cannot run in
CI): the services, the settings they set, their volumes, GPUs and health checks."""

from __future__ import annotations

import re
import shlex
import sqlite3
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.cli.main import COMMANDS
from bot.settings import Settings, split_host_port

ROOT = Path(__file__).parents[2]
SETTING_NAMES = {str(field.validation_alias) for field in Settings.model_fields.values()}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def workers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: s for name, s in services(compose).items() if s.get("command") == ["easel", "worker"]
    }


def environment(service: dict[str, Any]) -> dict[str, str]:
    return {str(key): str(value) for key, value in service.get("environment", {}).items()}


def image_environment() -> dict[str, str]:
    """What the Dockerfile's ENV lines set (continuation lines joined)."""
    dockerfile = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    found = {}
    for line in dockerfile.splitlines():
        if line.startswith("ENV "):
            for word in shlex.split(line.removeprefix("ENV ")):
                key, _, value = word.partition("=")
                found[key] = value
    return found


def env_file_settings() -> dict[str, str]:
    """What ``.env.example`` sets, read as ``docker run --env-file`` and compose's env_file
    read it: every line that is not blank or a comment, empty values included."""
    found = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            found[key] = value
    return found


def container_environment(service: dict[str, Any]) -> dict[str, str]:
    """What a compose service runs with: the image's ENV, under its env_file (.env, as
    .env.example has it), under its own environment."""
    assert service["env_file"] == ".env"
    return image_environment() | env_file_settings() | environment(service)


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source, for each of the service's volumes."""
    found = {}
    for entry in service.get("volumes", []):
        # source:target[:mode]; a source may be ${VARIABLE:-default}, colon included.
        spec, _, mode = entry.rpartition(":")
        source, _, target = (spec if mode in {"ro", "rw"} else entry).rpartition(":")
        found[target] = source
    return found


def test_the_bot_a_broker_and_a_worker_per_gpu(compose: dict[str, Any]) -> None:
    bot = services(compose)["bot"]
    assert bot["command"] == ["easel", "run"]
    assert "nats" in services(compose)
    assert "--jetstream" in services(compose)["nats"]["command"]
    gpus = []
    for worker in workers(compose).values():
        [device] = worker["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
        gpus.extend(device["device_ids"])
        # The one GPU a container is given is cuda:0 inside it.
        assert environment(worker)["EASEL_DEVICES"] == "cuda:0"
    assert "0" in gpus and len(gpus) == len(set(gpus)) >= 2, gpus


def test_every_setting_named_is_a_real_one_with_a_valid_value(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        env = environment(service)
        unknown = {key for key in env if key.startswith(("EASEL_", "DISCORD_"))} - SETTING_NAMES
        assert not unknown, f"{name} sets {unknown}, which bot/settings.py does not read"
        if name != "nats":
            Settings(_env_file=None, **env)  # type: ignore[call-arg]


def test_bot_and_workers_use_the_broker_once_it_is_healthy(compose: dict[str, Any]) -> None:
    nats_port = 4222
    for name in ["bot", *workers(compose)]:
        service = services(compose)[name]
        assert environment(service)["EASEL_QUEUE_URL"] == f"nats://nats:{nats_port}", name
        assert service["depends_on"]["nats"]["condition"] == "service_healthy", name


def test_data_and_models_live_in_volumes(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    for name, service in services(compose).items():
        for source in mounts(service).values():
            if not source.startswith(("/", ".", "$")):
                assert source in declared, f"{name} mounts volume {source}, never declared"
        env = environment(service)
        for setting in ("EASEL_DATA_DIR", "EASEL_MODELS_DIR", "EASEL_WILDCARDS_DIR"):
            if setting in env:
                assert env[setting] in mounts(service), f"{name}: {setting} is not a volume"
    assert mounts(services(compose)["bot"])["/data"] == "easel-data"
    assert "/data" in mounts(services(compose)["nats"])


def test_every_service_has_a_health_check_that_exists(compose: dict[str, Any]) -> None:
    easel_checks = []
    for name, service in services(compose).items():
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD", name
        if name == "nats":
            assert any("/healthz" in part for part in test)
            assert "--http_port" in service["command"]
            continue
        assert test[1:] == ["easel", "health"], name
        easel_checks.append(service["healthcheck"])
        assert "health" in COMMANDS
        # easel health asks the server EASEL_METRICS_ADDR names, as the container has it after
        # the image, .env and the service's environment: it must be set, and published.
        env = container_environment(service)
        host, port = split_host_port(env["EASEL_METRICS_ADDR"])
        assert host == "0.0.0.0", name
        assert any(str(entry).endswith(f":{port}") for entry in service["ports"]), name
        settings = Settings(_env_file=None, **env)  # type: ignore[call-arg]
        assert settings.metrics_endpoint == (host, port), name
        for folder in (settings.data_dir, settings.models_dir):
            assert str(folder) in mounts(service), f"{name}: {folder} is not a volume"
    # One health check (compose's x-easel anchor) for the bot and every worker.
    assert len(easel_checks) >= 3 and all(check == easel_checks[0] for check in easel_checks)


def test_every_service_rotates_its_logs(compose: dict[str, Any]) -> None:
    """Docker's default json-file driver keeps every line forever: a week of jobs, or a
    Discord outage's retries, would fill the disk."""
    for name, service in services(compose).items():
        logging = service.get("logging", {})
        assert logging.get("driver") == "local", name
        assert logging["options"]["max-size"].endswith("m"), name
        assert int(logging["options"]["max-file"]) >= 2, name


def test_the_env_example_overrides_nothing_the_image_sets() -> None:
    """``docker run --env-file .env`` puts .env over the image's ENV: an empty
    EASEL_METRICS_ADDR= turned the health check's server off, ./data moved the database out
    of the /data volume."""
    image, example = image_environment(), env_file_settings()
    assert {"EASEL_METRICS_ADDR", "EASEL_DATA_DIR", "EASEL_MODELS_DIR"} <= set(image)
    overridden = {key: example[key] for key in set(image) & set(example)}
    assert not overridden, f".env.example overrides the image's {overridden}"
    settings = Settings(_env_file=None, **(image | example))  # type: ignore[call-arg]
    assert settings.metrics_endpoint == ("0.0.0.0", 9100)
    assert settings.data_dir == Path("/data") and settings.models_dir == Path("/models")


def test_the_dockerfile_builds_a_non_root_cuda_image_with_a_pinned_torch_index() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM nvidia/cuda:\d+\.\d+\.\d+-\S+$", dockerfile, re.MULTILINE)
    [cuda] = re.findall(r"^FROM nvidia/cuda:(\d+)\.(\d+)", dockerfile, re.MULTILINE)
    # The torch wheels' CUDA matches the base image's.
    assert f"download.pytorch.org/whl/cu{cuda[0]}{cuda[1]}" in dockerfile
    users = re.findall(r"^USER (\S+)$", dockerfile, re.MULTILINE)
    assert users and users[-1] not in {"root", "0"}
    assert re.search(r'^HEALTHCHECK .*CMD \["easel", "health"\]$', dockerfile, re.MULTILINE)
    assert "EASEL_METRICS_ADDR=0.0.0.0:9100" in dockerfile and "EXPOSE 9100" in dockerfile
    # The dependencies install before any code is copied (a code change keeps that layer),
    # and every package the code needs is copied before the project's own install.
    dependencies = dockerfile.index('pip install --extra-index-url "$TORCH_INDEX"')
    project = dockerfile.index("RUN pip install --no-deps .")
    for package in ("bot", "cogs", "db", "inference"):
        assert dependencies < dockerfile.index(f"COPY {package}/ {package}/") < project
    # The broker's client and torchao (EASEL_QUANTIZE), as pyproject names the extras.
    [extras] = re.findall(r'pip install .*"\.\[([a-z,]+)\]"', dockerfile)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    optional = pyproject["project"]["optional-dependencies"]
    assert {"distributed", "quant"} <= set(extras.split(",")) <= set(optional)
    assert any(requirement.startswith("torchao") for requirement in optional["quant"])


def test_the_build_context_leaves_out_secrets_models_and_data() -> None:
    ignored = {
        line for line in (ROOT / ".dockerignore").read_text().splitlines() if line[:1] != "#"
    }
    assert {".env", ".git", "models/", "data/"} <= ignored
    dockerfile = (ROOT / "Dockerfile").read_text()
    for copied in re.findall(r"^COPY (.+) \S+$", dockerfile, re.MULTILINE):
        assert not set(copied.split()) & ignored, copied


def test_the_readme_asks_for_the_permissions_easel_needs() -> None:
    from bot.app import INVITE_PERMISSIONS

    assert INVITE_PERMISSIONS.view_audit_log  # kicks and timeouts are heard only through it
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f"(permission integer `{INVITE_PERMISSIONS.value}`)" in readme


@pytest.mark.parametrize("document", ["README.md", "docs/deployment.md"])
def test_the_documented_docker_run_leaves_the_stop_its_time_and_restarts(
    document: str, compose: dict[str, Any]
) -> None:
    """Docker's default stop timeout is 10 s, under the bot's stop budget: a `docker run` as
    documented would be killed mid-stop, and without a restart policy a lost GPU's exit
    (status 4) would leave it down."""
    from bot.app import STOP_BUDGET_S

    text = " ".join((ROOT / document).read_text().split())
    runs = re.findall(r"`(docker run [^`]+)`", text)
    assert runs, document
    bot = services(compose)["bot"]
    for run in runs:
        words = shlex.split(run)
        timeout = words[words.index("--stop-timeout") + 1]
        assert float(timeout) > STOP_BUDGET_S and f"{timeout}s" == bot["stop_grace_period"], run
        assert words[words.index("--restart") + 1] == bot["restart"] == "unless-stopped", run


def test_the_documented_backup_in_the_image_is_readable_by_its_owner_alone(
    tmp_path: Path,
) -> None:
    """docs/deployment.md's backup in the image, run as written under a shell's usual umask
    (022) with its paths in a folder of the test's and ``docker compose`` replaced by what it
    does (a copy fetched as a file readable by all, which is all ``docker compose cp`` may
    promise): the copy in the container and the one fetched are 0600, as the data folder's
    files are; a world-readable copy would hold every member's prompts."""
    text = (ROOT / "docs/deployment.md").read_text()
    lines = [line.strip() for line in text.splitlines()]
    [exec_line] = [line for line in lines if line.startswith("docker compose exec bot sh -c")]
    [fetch_line] = [line for line in lines if "docker compose cp bot:/tmp/easel.sqlite3" in line]
    database, copied = tmp_path / "easel.sqlite3", tmp_path / "copy.sqlite3"
    with sqlite3.connect(database) as raw:
        raw.execute("CREATE TABLE jobs (prompt TEXT)")
    raw.close()
    in_the_image = shlex.split(exec_line.removeprefix("docker compose exec bot "))
    in_the_image[-1] = (
        in_the_image[-1]
        .replace("/data/easel.sqlite3", str(database))
        .replace("/tmp/easel.sqlite3", str(copied))
        .replace("python3 -c", f"{shlex.quote(sys.executable)} -c")
    )
    subprocess.run(["sh", "-c", f"umask 022 && {shlex.join(in_the_image)}"], check=True)
    assert stat.S_IMODE(copied.stat().st_mode) == 0o600
    copied.chmod(0o644)
    fetched = fetch_line.replace("docker compose cp bot:/tmp/easel.sqlite3", f"cp {copied}")
    subprocess.run(["sh", "-c", f"umask 022 && {fetched}"], check=True, cwd=tmp_path)
    [backup] = tmp_path.glob("easel-*.sqlite3")
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
