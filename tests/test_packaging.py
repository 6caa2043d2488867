"""The distribution: its name on the index, what the wheel holds, and install hints that name it.

The index's ``traced`` is an unrelated project with the same import name and console
script, so ours is ``traced-daemon`` and every install instruction must say so. A
``pipx``/``uv tool`` user has only the wheel, so the systemd units and their installer
must be inside it and work from it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from traced._version import DISTRIBUTION, __version__

REPO = Path(__file__).resolve().parent.parent


def test_distribution_name_is_ours_and_in_one_place() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["name"] == DISTRIBUTION == "traced-daemon"
    assert project["scripts"] == {"traced": "traced.cli.main:main"}  # the command stays `traced`


def _install_lines() -> list[tuple[str, int, str]]:
    """Every line of the docs, scripts and sources that tells a user to install a package."""
    found = []
    files = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "scripts").iterdir()),
             *sorted((REPO / "src").rglob("*.py"))]
    for path in files:
        for no, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if re.search(r"pip install|pipx (install|inject)|uv tool install|uv pip install", line):
                found.append((str(path.relative_to(REPO)), no, line))
    return found


def test_no_instruction_installs_the_other_traced() -> None:
    """`pip install traced`, `traced[nats]`, `pipx install traced`: each would fetch the other project."""
    lines = _install_lines()
    assert len(lines) >= 4  # the check sees the README's and forwarding.md's instructions at least
    wrong = [(f, n, line) for f, n, line in lines
             if re.search(r"""(install|inject)\s+(-\S+\s+)*['"]?traced(\[|['"\s]|$)""", line)]
    assert wrong == []
    # and no extra is named on the other project anywhere: `traced[nats]` is PyPI's other traced
    files = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "src").rglob("*.py"))]
    extras = [(str(p.relative_to(REPO)), n, line) for p in files
              for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
              if re.search(r"(?<![\w./-])traced\[", line)]
    assert extras == []


def test_missing_extra_names_the_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    from traced.errors import ForwardURLError
    from traced.forward import check_urls

    monkeypatch.setitem(sys.modules, "nats", None)  # as if nats-py were not installed
    with pytest.raises(ForwardURLError) as err:
        check_urls(["nats://127.0.0.1:4222"])
    assert str(err.value) == (
        "--forward nats://127.0.0.1:4222?stream=TRACED&subject=traced: needs nats-py: "
        f"install the extra into traced's environment ({sys.prefix}): pip install 'traced-daemon[nats]', "
        "uv tool install 'traced-daemon[nats]', or pipx inject traced-daemon nats-py")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from this checkout by hatchling (no network, no build isolation)."""
    out = tmp_path_factory.mktemp("wheel")
    res = subprocess.run([sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(out)], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    (built,) = out.glob("*.whl")
    assert built.name == f"traced_daemon-{__version__}-py3-none-any.whl"
    return built


def test_wheel_holds_the_units_the_installer_and_the_command(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta = zf.read(f"traced_daemon-{__version__}.dist-info/METADATA").decode()
        entry_points = zf.read(f"traced_daemon-{__version__}.dist-info/entry_points.txt").decode()
        for unit in ("traced.socket", "traced.service"):
            shipped = zf.read(f"traced/daemon/units/{unit}").decode()
            assert shipped == (REPO / "src/traced/daemon/units" / unit).read_text()
        assert zf.read("traced/daemon/units/service.md").decode() == (REPO / "docs/service.md").read_text()
    assert {"traced/daemon/unitfiles.py", "traced/cli/service.py", "traced/py.typed"} <= names
    assert "Name: traced-daemon\n" in meta
    assert "[console_scripts]\ntraced = traced.cli.main:main" in entry_points
    assert not [n for n in names if "__pycache__" in n or n.startswith(("tests/", "systemd/"))]


def test_service_install_from_the_wheel_alone(wheel: Path, tmp_path: Path) -> None:
    """What a pipx/uv tool user runs: the installer reads the units from the installed package
    and points Documentation= at the docs shipped beside them (no checkout to link to)."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    traced_bin = tmp_path / "bin" / "traced"
    traced_bin.parent.mkdir()
    traced_bin.write_text("#!/bin/sh\nexit 0\n")
    traced_bin.chmod(0o755)
    env = {**os.environ, "PYTHONPATH": str(site), "HOME": str(tmp_path / "home"),
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_RUNTIME_DIR": str(tmp_path)}
    res = subprocess.run([sys.executable, "-m", "traced", "service", "install", "--bin", str(traced_bin)],
                         env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    units = tmp_path / "config" / "systemd" / "user"
    service = (units / "traced.service").read_text()
    assert f"ExecStart={traced_bin} serve\n" in service
    assert f"Documentation=file://{site}/traced/daemon/units/service.md\n" in service
    assert f"# {units}/traced.service <- {site}/traced/daemon/units/traced.service" in res.stdout
