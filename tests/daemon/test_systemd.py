"""The systemd user units (src/traced/daemon/units/), ``traced service`` and scripts/install-service.

The units are checked by systemd itself (``systemd-analyze --user verify``),
and the installer runs for real against a temporary $HOME and
$XDG_CONFIG_HOME. No user manager is reachable from these tests (their
$XDG_RUNTIME_DIR is an empty temporary directory), so the installer must say so
instead of enabling anything; one test puts a recording ``systemctl`` on PATH
to check the commands it would run against a live manager. The units are in the
wheel: tests/test_packaging.py builds it.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from traced import locations

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "src" / "traced" / "daemon" / "units"
SCRIPT = REPO / "scripts" / "install-service"
DOCS = REPO / "docs" / "service.md"
UNIT_NAMES = ("traced.socket", "traced.service")
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")

needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None,
    reason="systemd-analyze is not installed (Debian: apt-get install systemd)",
)


def traced_executable() -> Path:
    """A real executable for ExecStart=: the repo's traced, else this Python."""
    candidate = REPO / ".venv" / "bin" / "traced"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    return Path(sys.executable)


def exec_quote(path: str) -> str:
    """What the installer writes for a path in ExecStart= (systemd quoting), written out here
    independently of traced.daemon.unitfiles."""
    value = path.replace("%", "%%").replace("$", "$$")
    if re.search(r"[\s\"'\\]", value):
        value = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def docs_url() -> str:
    return "file://" + str(DOCS).replace("%", "%25").replace(" ", "%20").replace("%", "%%")


def render(unit: str, traced_bin: str) -> str:
    """A unit as the installer writes it."""
    text = (UNITS / unit).read_text().rstrip("\n") + "\n"
    return text.replace("@TRACED_BIN@", exec_quote(traced_bin)).replace("@TRACED_DOCS@", docs_url())


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """``{section: [(key, value), ...]}``; our units use no continuation lines."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"continuation line: {raw!r}"
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        assert current is not None, f"setting outside a section: {raw!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a setting: {raw!r}"
        current.append((key.strip(), value.strip()))
    return sections


def settings(text: str, section: str) -> dict[str, str]:
    """The last value of each key in ``section``."""
    return dict(parse_unit(text)[section])


def analyze_env(tmp: Path) -> dict[str, str]:
    """What ``systemd-analyze --user verify`` needs: a runtime dir (else it fails
    with "Failed to lookup RuntimeDirectory path") and, for isolation from the
    caller's own units, its own HOME and XDG_CONFIG_HOME."""
    for name in ("home", "config", "run"):
        (tmp / name).mkdir(mode=0o700, parents=True, exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp / "home"),
        "XDG_CONFIG_HOME": str(tmp / "config"),
        "XDG_RUNTIME_DIR": str(tmp / "run"),
        "SYSTEMD_COLORS": "0",
        "SYSTEMD_PAGER": "",
        "LC_ALL": "C.UTF-8",
    }


def verify(unit_files: list[Path], tmp: Path) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run(
        [SYSTEMD_ANALYZE, "--user", "verify", *map(str, unit_files)],
        env=analyze_env(tmp),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def complaints(result: subprocess.CompletedProcess[str], unit_dir: Path) -> list[str]:
    """Output lines about our units (warnings name the file or the unit)."""
    lines = (result.stdout + result.stderr).splitlines()
    return [
        line for line in lines if str(unit_dir) in line or any(name in line for name in UNIT_NAMES)
    ]


def write_units(unit_dir: Path, traced_bin: str, extra_service: str = "") -> list[Path]:
    unit_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for unit in UNIT_NAMES:
        text = render(unit, traced_bin)
        if unit == "traced.service" and extra_service:
            text = text.replace("[Service]\n", "[Service]\n" + extra_service + "\n", 1)
        (unit_dir / unit).write_text(text)
        written.append(unit_dir / unit)
    return written


# --- the units ------------------------------------------------------------------


@needs_systemd_analyze
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    unit_dir = tmp_path / "units"
    files = write_units(unit_dir, str(traced_executable()))
    result = verify(files, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert complaints(result, unit_dir) == [], output
    assert "Unknown" not in output, output


@needs_systemd_analyze
@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("BogusDirective=1", "Unknown key"),
        ("", "is not executable"),  # ExecStart= pointing nowhere
    ],
)
def test_verify_check_is_not_vacuous(tmp_path: Path, extra: str, expected: str) -> None:
    """Controls: the same check does flag a bad unit."""
    unit_dir = tmp_path / "units"
    traced_bin = str(traced_executable()) if extra else str(tmp_path / "no-such-traced")
    files = write_units(unit_dir, traced_bin, extra_service=extra)
    result = verify(files, tmp_path)
    assert any(expected in line for line in complaints(result, unit_dir)), (
        result.stdout + result.stderr
    )


def test_socket_unit_settings() -> None:
    text = (UNITS / "traced.socket").read_text()
    unit = settings(text, "Unit")
    assert unit["Description"]
    assert unit["Documentation"] == "@TRACED_DOCS@"
    socket = settings(text, "Socket")
    assert socket["ListenStream"] == "%t/traced/traced.sock"
    assert socket["SocketMode"] == "0600"
    assert socket["DirectoryMode"] == "0700"
    assert settings(text, "Install")["WantedBy"] == "sockets.target"


def test_service_unit_settings() -> None:
    text = (UNITS / "traced.service").read_text()
    unit = settings(text, "Unit")
    assert unit["Requires"] == "traced.socket"
    assert unit["After"] == "traced.socket"
    service = settings(text, "Service")
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "ExecStart": "@TRACED_BIN@ serve",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "WatchdogSec": "30",
        "Restart": "on-failure",
        "RestartSec": "1",
        "TimeoutStopSec": "30",
        "KillSignal": "SIGTERM",
        "RuntimeDirectory": "traced",
        "RuntimeDirectoryMode": "0700",
        # The socket file lives in the runtime directory and belongs to the socket
        # unit: without this, stopping the service deletes it.
        "RuntimeDirectoryPreserve": "yes",
        "NoNewPrivileges": "yes",
        # In a user manager PrivateTmp=/ProtectSystem= need a user namespace.
        "PrivateUsers": "yes",
        "PrivateTmp": "yes",
        "ProtectSystem": "strict",
        "ReadWritePaths": "%h",
        "LockPersonality": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "RestrictRealtime": "yes",
        "SystemCallArchitectures": "native",
    }
    assert {key: service.get(key) for key in expected} == expected
    # systemd <= 252 puts a user unit's StateDirectory= under ~/.config, so the
    # daemon would write where `traced ls` does not read; see the unit's comment.
    assert "StateDirectory" not in service
    install = settings(text, "Install")
    assert install["WantedBy"] == "default.target"
    assert install["Also"] == "traced.socket"


def test_unit_paths_agree_with_the_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ListenStream=%t/traced/traced.sock is where clients and the daemon look,
    with and without the $RUNTIME_DIRECTORY that RuntimeDirectory=traced sets."""
    runtime = tmp_path / "run"
    listen = settings((UNITS / "traced.socket").read_text(), "Socket")["ListenStream"]
    expected = Path(listen.replace("%t", str(runtime)))
    for name in ("TRACED_SOCKET", "RUNTIME_DIRECTORY", "STATE_DIRECTORY", "XDG_STATE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert locations.socket_path() == expected  # a client outside the service
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(runtime / "traced"))
    assert locations.socket_path() == expected  # the daemon inside it
    # No StateDirectory=: the service's state is the default one, under $HOME,
    # which ReadWritePaths=%h keeps writable.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert locations.state_dir() == tmp_path / "home" / ".local" / "state" / "traced"


# --- traced service install|uninstall|status, and scripts/install-service ----------


def script_env(tmp: Path, **extra: str) -> dict[str, str]:
    """A temp HOME/XDG_CONFIG_HOME, and an empty runtime dir: no user manager."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TRACED_BIN", "DBUS_SESSION_BUS_ADDRESS", "XDG_CONFIG_HOME")
    }
    (tmp / "home").mkdir(exist_ok=True)
    (tmp / "run").mkdir(mode=0o700, exist_ok=True)
    env.update(
        HOME=str(tmp / "home"),
        XDG_CONFIG_HOME=str(tmp / "config"),
        XDG_RUNTIME_DIR=str(tmp / "run"),
        SYSTEMD_COLORS="0",
    )
    env.update(extra)
    return env


def run_script(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=600,
                          check=False)


def service(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``traced service ARGS`` as ``python -m traced`` (its default executable: the venv's traced)."""
    return subprocess.run([sys.executable, "-m", "traced", "service", *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def spaced_traced(tmp: Path) -> Path:
    """A path with a space (ExecStart= must quote it) to a real traced: a symlink to the venv's."""
    link = tmp / "opt dir" / "traced"
    link.parent.mkdir()
    link.symlink_to(traced_executable())
    return link


def test_script_help_and_bad_arguments(tmp_path: Path) -> None:
    result = run_script(script_env(tmp_path), "--help")
    assert result.returncode == 0
    assert "usage: scripts/install-service" in result.stdout
    assert "--uninstall" in result.stdout
    assert "--dry-run" in result.stdout
    bad = run_script(script_env(tmp_path), "--frobnicate")
    assert bad.returncode == 2
    assert "unknown argument: --frobnicate" in bad.stderr
    bad = service(script_env(tmp_path), "frobnicate")
    assert bad.returncode == 2
    assert "invalid choice: 'frobnicate'" in bad.stderr


def test_dry_run_only_prints(tmp_path: Path) -> None:
    traced_bin = tmp_path / "opt dir" / "traced"  # need not exist for a dry run
    env = script_env(tmp_path)
    result = service(env, "install", "--dry-run", "--bin", str(traced_bin))
    assert result.returncode == 0, result.stderr
    unit_dir = tmp_path / "config" / "systemd" / "user"
    out = result.stdout
    assert out.startswith("(dry run: nothing is changed)\n")
    assert f"traced executable: {traced_bin}\n" in out
    assert f"+ mkdir -p {unit_dir}\n" in out
    for unit in UNIT_NAMES:
        assert f"+ write {unit_dir}/{unit} (mode 0644)\n" in out
    assert "No systemd user manager is running here" in out
    assert "    systemctl --user enable --now traced.socket\n" in out
    assert not (tmp_path / "config").exists()  # nothing was written
    uninstall = service(env, "uninstall", "--dry-run")
    assert uninstall.returncode == 0, uninstall.stderr
    assert f"= no traced units in {unit_dir}\n" in uninstall.stdout


def test_install_status_uninstall(tmp_path: Path) -> None:
    traced_bin = spaced_traced(tmp_path)
    env = script_env(tmp_path)
    unit_dir = tmp_path / "config" / "systemd" / "user"

    before = service(env, "status", "--bin", str(traced_bin))
    assert before.returncode == 1
    assert f"{unit_dir}/traced.socket: not installed\n" in before.stdout

    first = service(env, "install", "--bin", str(traced_bin))
    assert first.returncode == 0, first.stderr
    for unit in UNIT_NAMES:
        installed = unit_dir / unit
        assert f"+ write {installed} (mode 0644)\n" in first.stdout
        text = installed.read_text()
        assert text == render(unit, str(traced_bin))
        assert "@TRACED_" not in text  # no placeholder left
        assert stat.S_IMODE(installed.stat().st_mode) == 0o644
    service_text = (unit_dir / "traced.service").read_text()
    assert f'ExecStart="{traced_bin}" serve\n' in service_text
    assert f"Documentation={docs_url()}\n" in service_text
    assert "No systemd user manager is running here" in first.stdout
    assert "+ systemctl" not in first.stdout  # ... so it ran none
    # the service's PrivateTmp=yes would hide an executable under /tmp (pytest's tmp_path is there)
    if str(traced_bin).startswith("/tmp/"):
        assert first.stderr == (f"traced service: warning: {traced_bin} is under /tmp, which the service does not "
                                "see (PrivateTmp=yes): it would fail with status=203/EXEC; install traced "
                                "elsewhere, or add a drop-in with PrivateTmp=no\n")

    if SYSTEMD_ANALYZE is not None:  # what it installed is valid for systemd
        checked = verify([unit_dir / unit for unit in UNIT_NAMES], tmp_path / "analyze")
        assert checked.returncode == 0, checked.stderr
        assert complaints(checked, unit_dir) == [], checked.stderr

    status = service(env, "status", "--bin", str(traced_bin))
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.splitlines()[:2] == [f"{unit_dir}/{u}: installed, up to date" for u in UNIT_NAMES]

    again = service(env, "install", "--bin", str(traced_bin))  # idempotent
    assert again.returncode == 0, again.stderr
    assert "+ write" not in again.stdout
    for unit in UNIT_NAMES:
        assert f"= {unit_dir / unit} is up to date" in again.stdout

    # the executable went away (a moved venv): status names the failure systemd would give
    (traced_bin.parent / "gone").symlink_to(traced_bin.parent / "nowhere")
    (unit_dir / "traced.service").write_text(render("traced.service", str(traced_bin.parent / "gone")))
    stale = service(env, "status", "--bin", str(traced_bin))
    assert stale.returncode == 1
    assert f"runs {traced_bin.parent / 'gone'}, which is not an executable file" in stale.stdout
    assert "status=203/EXEC" in stale.stdout

    removed = service(env, "uninstall")
    assert removed.returncode == 0, removed.stderr
    for unit in UNIT_NAMES:
        assert f"+ rm -f {unit_dir / unit}" in removed.stdout
        assert not (unit_dir / unit).exists()
    assert "No systemd user manager is running here" in removed.stdout

    twice = service(env, "uninstall")
    assert twice.returncode == 0, twice.stderr
    assert "no traced units" in twice.stdout


def test_default_executable_is_the_running_traced(tmp_path: Path) -> None:
    """Without --bin, ExecStart= names the traced that ran the command: as a console script
    (pipx/uv tool put one on PATH, often as a symlink, which is kept), or beside this Python."""
    env = script_env(tmp_path)
    link = spaced_traced(tmp_path)
    as_script = subprocess.run([str(link), "service", "install"], env=env, capture_output=True, text=True,
                               timeout=60, check=False)
    assert as_script.returncode == 0, as_script.stderr
    unit = tmp_path / "config" / "systemd" / "user" / "traced.service"
    assert f"ExecStart={exec_quote(str(link))} serve\n" in unit.read_text()
    beside = Path(sys.executable).parent / "traced"
    if not os.access(beside, os.X_OK):
        pytest.skip("no traced console script beside this Python")
    as_module = service(env, "install")
    assert as_module.returncode == 0, as_module.stderr
    assert f"ExecStart={exec_quote(str(beside))} serve\n" in unit.read_text()


def test_script_calls_the_command(tmp_path: Path) -> None:
    """scripts/install-service picks $TRACED_BIN (else the repo's venv) and runs its `service install`."""
    traced_bin = spaced_traced(tmp_path)
    env = script_env(tmp_path, TRACED_BIN=str(traced_bin))
    unit_dir = tmp_path / "config" / "systemd" / "user"
    dry = run_script(env, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"traced executable: {traced_bin}\n" in dry.stdout
    assert not unit_dir.exists()
    first = run_script(env)
    assert first.returncode == 0, first.stderr
    assert (unit_dir / "traced.service").read_text() == render("traced.service", str(traced_bin))
    removed = run_script(env, "--uninstall")
    assert removed.returncode == 0, removed.stderr
    assert not any(unit_dir.glob("traced.*"))


def test_script_defaults_to_the_repo_venv(tmp_path: Path) -> None:
    traced_bin = REPO / ".venv" / "bin" / "traced"
    if not os.access(traced_bin, os.X_OK):
        pytest.skip("no .venv/bin/traced in the repo (scripts/test creates it)")
    result = run_script(script_env(tmp_path))
    assert result.returncode == 0, result.stderr
    service_text = (tmp_path / "config" / "systemd" / "user" / "traced.service").read_text()
    assert f"ExecStart={exec_quote(str(traced_bin))} serve\n" in service_text


def test_commands_run_against_a_user_manager(tmp_path: Path) -> None:
    """With a manager reachable, install reloads, enables and starts the socket.

    ``systemctl`` here is a recording stand-in on PATH (no manager runs in CI);
    the real sequence was checked by hand against a live ``systemd --user``.
    """
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "systemctl.log"
    stub = bindir / "systemctl"
    stub.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\nexit 0\n')
    stub.chmod(0o755)
    traced_bin = spaced_traced(tmp_path)
    env = script_env(tmp_path, PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")

    def calls() -> list[str]:
        lines = log.read_text().splitlines() if log.exists() else []
        log.unlink(missing_ok=True)
        return [line for line in lines if line != "--user show-environment"]

    first = service(env, "install", "--bin", str(traced_bin))
    assert first.returncode == 0, first.stderr
    assert calls() == [
        "--user daemon-reload",
        "--user enable --now traced.socket",
        "--user try-restart traced.service",
    ]
    for call in ("daemon-reload", "enable --now traced.socket"):
        assert f"+ systemctl --user {call}" in first.stdout
    assert "No systemd user manager" not in first.stdout

    again = service(env, "install", "--bin", str(traced_bin))  # nothing changed: no reload, no restart
    assert again.returncode == 0, again.stderr
    assert calls() == ["--user enable --now traced.socket"]

    status = service(env, "status", "--bin", str(traced_bin))
    assert status.returncode == 0, status.stdout
    assert calls() == [f"--user {verb} traced.socket traced.service" for verb in ("is-enabled", "is-active")]

    removed = service(env, "uninstall")
    assert removed.returncode == 0, removed.stderr
    assert calls() == [
        "--user disable --now traced.socket traced.service",
        "--user daemon-reload",
    ]
    assert not any((tmp_path / "config" / "systemd" / "user").glob("traced.*"))


def test_never_an_empty_or_relative_exec_start(tmp_path: Path) -> None:
    """gpustack#793: an installer that took `which` output wrote `ExecStart=` empty. Here a unit is
    rendered only for an absolute path, and a missing executable is an error before anything is written."""
    from traced.daemon import unitfiles

    for bad in ("", "traced", "./traced"):
        with pytest.raises(ValueError, match="absolute path"):
            unitfiles.render("traced.service", bad)
    env = script_env(tmp_path, PATH=str(tmp_path / "empty"))
    res = service(env, "install", "--bin", "traced")  # not on this PATH
    assert res.returncode == 2
    assert res.stderr.strip().endswith("--bin traced: not on PATH")
    res = service(env, "install", "--bin", str(tmp_path / "nowhere" / "traced"))
    assert res.returncode == 2
    assert "not an executable file" in res.stderr
    assert not (tmp_path / "config").exists()
    assert unitfiles.exec_start_binary(render("traced.service", "/opt/my tools/traced")) == "/opt/my tools/traced"
