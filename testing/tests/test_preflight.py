"""First contact: what a newcomer's `make` commands say when something is missing.

``scripts/preflight`` runs before uv and the virtualenv exist; these tests run
it with a PATH that holds only what each case needs (fake ``python3`` and
``docker`` programs written per test), and read what it prints.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from herald_testing import backends, preflight
from herald_testing.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
PREFLIGHT = ROOT / "scripts" / "preflight"
UV_VERSION = "0.13.9"


def fake_program(bin_dir: Path, name: str, script: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/bash\n{script}\n", encoding="utf-8")
    path.chmod(0o755)


def preflight_run(
    *args: str, path: Path, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/bash", str(PREFLIGHT), *args],
        env={"PATH": str(path), "HOME": str(path.parent)} | (env or {}),
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
    )


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    path = tmp_path / "bin"
    path.mkdir()
    for tool in ("sed", "tail", "tr", "grep"):  # what scripts/preflight calls besides bash
        os.symlink(shutil.which(tool) or f"/usr/bin/{tool}", path / tool)
    return path


@pytest.fixture
def listening_port() -> Iterator[int]:
    port = free_port()
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
        server.listen()
        yield port


def test_an_old_python_is_named_with_the_fix(bin_dir: Path) -> None:
    fake_program(
        bin_dir,
        "python3",
        'case "$*" in *platform*) echo 3.9.2 ;; *) exit 1 ;; esac',
    )
    result = preflight_run("python", path=bin_dir)
    assert result.returncode == 1
    assert "Herald needs Python 3.11 or newer (python3 is 3.9.2)" in result.stderr
    assert "Fix: install Python 3.11+" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_newer_python_under_another_name_is_found(bin_dir: Path) -> None:
    fake_program(bin_dir, "python3", "exit 1")
    fake_program(bin_dir, "python3.12", "exit 0")
    result = preflight_run("python", path=bin_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(bin_dir / "python3.12")


def test_the_pinned_uv_is_bootstrapped_with_venv_and_pip(tmp_path: Path) -> None:
    tools = tmp_path / "tools"
    result = subprocess.run(
        ["/bin/bash", str(PREFLIGHT), "uv", UV_VERSION, str(tools)],
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"uv not found on PATH: installing uv {UV_VERSION} into {tools}/" in result.stderr
    version = subprocess.run(
        [str(tools / "bin" / "uv"), "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.split()[:2] == ["uv", UV_VERSION]


def test_make_up_without_docker_points_to_make_dev(bin_dir: Path) -> None:
    result = preflight_run("docker-up", path=bin_dir)
    assert result.returncode == 1
    assert "make up needs Docker Engine with Compose v2, and docker is not installed" in (
        result.stderr
    )
    assert "make dev" in result.stderr


def test_make_up_with_a_stopped_engine_says_start_it(bin_dir: Path) -> None:
    fake_program(bin_dir, "docker", '[ "$1" = info ] && exit 1; exit 0')
    result = preflight_run("docker-up", path=bin_dir)
    assert result.returncode == 1
    assert "Docker is installed but its engine does not answer" in result.stderr
    assert "sudo systemctl start docker" in result.stderr


def test_make_up_without_compose_v2_says_install_it(bin_dir: Path) -> None:
    fake_program(bin_dir, "docker", '[ "$1" = compose ] && exit 1; exit 0')
    result = preflight_run("docker-up", path=bin_dir)
    assert result.returncode == 1
    assert "make up needs Docker Compose v2 (docker compose)" in result.stderr


def test_make_up_names_a_taken_port_and_the_variable_that_moves_it(
    bin_dir: Path, listening_port: int, tmp_path: Path
) -> None:
    fake_program(bin_dir, "docker", "exit 0")  # engine and compose answer; nothing running
    result = preflight_run(
        "docker-up",
        path=bin_dir,
        env={"HERALD_MAILDEV_WEB_PORT": str(listening_port)},
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert f"port {listening_port} (maildev) is already in use by another program" in (
        result.stderr
    )
    assert f"HERALD_MAILDEV_WEB_PORT={listening_port + 1} make up" in result.stderr


def test_make_up_reads_the_port_from_dot_env(
    bin_dir: Path, listening_port: int, tmp_path: Path
) -> None:
    fake_program(bin_dir, "docker", "exit 0")
    (tmp_path / ".env").write_text(f"HERALD_API_PUBLISHED_PORT={listening_port}\n")
    result = preflight_run("docker-up", path=bin_dir, cwd=tmp_path)
    assert result.returncode == 1
    assert f"port {listening_port} (api)" in result.stderr


def test_make_up_ignores_a_port_its_own_running_stack_holds(
    bin_dir: Path, listening_port: int, tmp_path: Path
) -> None:
    fake_program(bin_dir, "docker", '[ "$2" = ps ] && echo api; exit 0')
    result = preflight_run(
        "docker-up",
        path=bin_dir,
        env={"HERALD_API_PUBLISHED_PORT": str(listening_port)},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr


def test_no_npm_and_no_docker_names_every_way_to_get_maildev(bin_dir: Path, tmp_path: Path) -> None:
    result = preflight_run("npm-ci", "testing", str(tmp_path / "stamp"), path=bin_dir)
    assert result.returncode == 1
    assert "npm not found, and no Docker engine answers" in result.stderr
    assert "HERALD_TEST_MAILDEV=" in result.stderr
    assert not (tmp_path / "stamp").exists()


def test_no_npm_with_docker_goes_on_and_says_so(bin_dir: Path, tmp_path: Path) -> None:
    fake_program(bin_dir, "docker", "exit 0")
    result = preflight_run("npm-ci", "testing", str(tmp_path / "stamp"), path=bin_dir)
    assert result.returncode == 0
    assert "npm not found: the tests run MailDev from its Docker image" in result.stderr
    # Not stamped: once npm is installed, the next `make install` installs MailDev.
    assert not (tmp_path / "stamp").exists()


def test_tests_without_any_backend_say_what_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(backends.BACKENDS_ENV, "containers")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    problems = preflight.test_backends()
    assert [p.split(":")[0] for p in problems] == [
        "No PostgreSQL for the tests",
        "No Redis for the tests",
        "No MailDev for the tests",
    ]
    assert all("Fix: start Docker" in p for p in problems)


def test_an_unknown_backends_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(backends.BACKENDS_ENV, "docker")
    assert preflight.test_backends() == [
        "HERALD_TEST_BACKENDS must be auto or containers, not 'docker'"
    ]


def test_make_dev_names_unreachable_servers_and_taken_ports(listening_port: int) -> None:
    closed = free_port()
    problems = preflight.dev_stack(
        database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{closed}/herald",
        redis_url=f"redis://127.0.0.1:{closed}/0",
        ports={"HERALD_API_PORT": listening_port},
    )
    assert any(p.startswith(f"PostgreSQL at 127.0.0.1:{closed} does not answer") for p in problems)
    assert any(p.startswith(f"Redis at 127.0.0.1:{closed} does not answer") for p in problems)
    assert any(
        f"port {listening_port} (HERALD_API_PORT) is already in use" in p
        and f"HERALD_API_PORT={listening_port + 1} make dev" in p
        for p in problems
    )
