"""``traced service install|uninstall|status``: traced as a systemd user service.

The one home of the installer (scripts/install-service only picks the executable and
calls it). ``install`` writes the shipped units (daemon/unitfiles.py) into
``${XDG_CONFIG_HOME:-~/.config}/systemd/user/`` with ``ExecStart=`` naming the
``traced`` executable, then, when a user manager answers (``systemctl --user
show-environment``), runs ``daemon-reload``, ``enable --now traced.socket`` and
``try-restart traced.service`` (the last only when the service unit changed);
otherwise it prints those commands. Every action is printed before it is taken
(``+ …``), unchanged units are left alone (``= … is up to date``), and ``--dry-run``
takes none. docs/service.md describes it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from traced.daemon import unitfiles
from traced.errors import EXIT_ERROR, EXIT_USAGE, CliError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

RUNNING = "systemd user manager"


def default_executable() -> str:
    """The ``traced`` to put in ``ExecStart=``: the console script this process was started as
    (absolute, symlinks kept, so a ``~/.local/bin/traced`` link survives upgrades), else the
    one beside this Python (``python -m traced``), else ``traced`` on PATH."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "traced" and os.path.isfile(argv0) and os.access(argv0, os.X_OK):
        return os.path.abspath(argv0)
    beside = os.path.join(os.path.dirname(sys.executable), "traced")
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("traced")
    if found:
        return os.path.abspath(found)
    raise CliError("no traced executable found: pass --bin PATH")


def _executable(args: argparse.Namespace) -> str:
    if not args.bin:
        return default_executable()
    given = str(args.bin)
    path = given if "/" in given else shutil.which(given)
    if not path:
        raise CliError(f"--bin {given}: not on PATH", EXIT_USAGE)
    path = os.path.abspath(path)
    if not args.dry_run and not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise CliError(f"--bin {path}: not an executable file", EXIT_USAGE)
    return path


def sandbox_hides(traced_bin: str) -> str | None:
    """Why the service's sandbox would not find ``traced_bin`` (it would fail with status=203/EXEC),
    or None: PrivateTmp=yes gives the service an empty /tmp and /var/tmp."""
    real = os.path.realpath(traced_bin)
    for tmp in ("/tmp/", "/var/tmp/"):
        if real.startswith(tmp) or traced_bin.startswith(tmp):
            return (f"{traced_bin} is under {tmp.rstrip('/')}, which the service does not see (PrivateTmp=yes): "
                    "it would fail with status=203/EXEC; install traced elsewhere, or add a drop-in with "
                    "PrivateTmp=no")
    return None


def _unit_dir() -> Path:
    try:
        return unitfiles.unit_dir(os.environ)
    except ValueError as e:
        raise CliError(str(e)) from e


def _show(cmd: list[str]) -> None:
    print("+ " + shlex.join(cmd), flush=True)


def _run(cmd: list[str], dry_run: bool) -> bool:
    """Print ``cmd``, then run it unless dry-run; True when it succeeded (or was not run)."""
    _show(cmd)
    if dry_run:
        return True
    res = subprocess.run(cmd, check=False)
    if res.returncode != 0:
        print(f"traced service: {shlex.join(cmd)} exited {res.returncode}", file=sys.stderr)
    return res.returncode == 0


def have_manager() -> bool:
    """True when ``systemctl --user`` reaches a user manager (``show-environment`` talks to it;
    ``is-system-running`` would fail for a manager that is merely degraded)."""
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return False
    try:
        res = subprocess.run([systemctl, "--user", "show-environment"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0


def _later(what: str, commands: list[str]) -> None:
    user = os.environ.get("USER") or "$USER"
    print()
    print(f"No {RUNNING} is running here (systemctl --user show-environment failed),")
    print(f"so nothing was {what}. Once one runs (log in to a session that has one, or")
    print(f"`loginctl enable-linger {user}` to keep one without a login), run:")
    for cmd in commands:
        print(f"    {cmd}")


def _write(dest: Path, text: str) -> None:
    """Write ``dest`` whole (temp file + rename), mode 0644 as systemd expects for a unit."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fchmod(fd, 0o644)
    finally:
        os.close(fd)
    os.replace(tmp, dest)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def cmd_install(args: argparse.Namespace) -> int:
    """Write the units, then reload and enable the socket when a user manager answers."""
    dry = bool(args.dry_run)
    if dry:
        print("(dry run: nothing is changed)")
    traced_bin = _executable(args)
    print(f"traced executable: {traced_bin}")
    hidden = sandbox_hides(traced_bin)
    if hidden:
        print(f"traced service: warning: {hidden}", file=sys.stderr)
    unit_dir = _unit_dir()
    if not unit_dir.is_dir():
        _show(["mkdir", "-p", str(unit_dir)])
        if not dry:
            unit_dir.mkdir(parents=True, exist_ok=True)
    changed = service_changed = False
    for name in unitfiles.UNITS:
        dest = unit_dir / name
        text = unitfiles.render(name, traced_bin)
        if _read(dest) == text:
            print(f"= {dest} is up to date")
            continue
        changed = True
        service_changed = service_changed or name == "traced.service"
        print(f"# {dest} <- {unitfiles.TEMPLATES / name} with @TRACED_BIN@={traced_bin}")
        print(f"+ write {shlex.quote(str(dest))} (mode 0644)", flush=True)
        if not dry:
            _write(dest, text)
    if not have_manager():
        _later("enabled or started", ["systemctl --user daemon-reload", "systemctl --user enable --now traced.socket"])
        return 0
    ok = True
    if changed:
        ok = _run(["systemctl", "--user", "daemon-reload"], dry) and ok
    ok = _run(["systemctl", "--user", "enable", "--now", "traced.socket"], dry) and ok
    if service_changed:
        ok = _run(["systemctl", "--user", "try-restart", "traced.service"], dry) and ok
    print()
    print("traced.socket is listening on ${XDG_RUNTIME_DIR}/traced/traced.sock;")
    print("the first client starts traced.service. Check: traced service status")
    return 0 if ok else EXIT_ERROR


def cmd_uninstall(args: argparse.Namespace) -> int:
    """Disable and stop the units, remove them and reload; sessions and state are kept."""
    dry = bool(args.dry_run)
    if dry:
        print("(dry run: nothing is changed)")
    unit_dir = _unit_dir()
    present = [name for name in unitfiles.UNITS if (unit_dir / name).exists()]
    manager = have_manager()
    if manager and present and not _run(["systemctl", "--user", "disable", "--now", *present], dry):
        print("traced service: removing the unit files anyway", file=sys.stderr)
    # the enablement links, should disable have been impossible (no manager)
    for link in (unit_dir / "sockets.target.wants" / "traced.socket",
                 unit_dir / "default.target.wants" / "traced.service"):
        if link.is_symlink() or link.exists():
            _show(["rm", "-f", str(link)])
            if not dry:
                link.unlink(missing_ok=True)
    for name in present:
        _show(["rm", "-f", str(unit_dir / name)])
        if not dry:
            (unit_dir / name).unlink(missing_ok=True)
    if not present:
        print(f"= no traced units in {unit_dir}")
    elif manager:
        _run(["systemctl", "--user", "daemon-reload"], dry)
    else:
        _later("stopped", ["systemctl --user stop traced.socket traced.service", "systemctl --user daemon-reload"])
    runtime = os.environ.get("XDG_RUNTIME_DIR") or ""
    rundir = Path(runtime) / "traced"
    if runtime.startswith("/") and rundir.is_dir() and not any(rundir.iterdir()):
        _show(["rmdir", str(rundir)])
        if not dry:
            rundir.rmdir()
    print("Sessions and state are kept ($XDG_STATE_HOME/traced, ~/.local/state/traced by default).")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Say whether the units are installed and current, and what systemd thinks of them.

    Exit 0 when both are installed as ``traced service install`` would write them now, 1 otherwise.
    """
    args.dry_run = True  # only looks
    traced_bin = _executable(args)
    unit_dir = _unit_dir()
    current = True
    for name in unitfiles.UNITS:
        dest = unit_dir / name
        text = _read(dest)
        if text is None:
            print(f"{dest}: not installed")
            current = False
        elif text == unitfiles.render(name, traced_bin):
            print(f"{dest}: installed, up to date")
        else:
            print(f"{dest}: installed, differs from what `traced service install` writes for {traced_bin}")
            current = False
        if name == "traced.service" and text is not None:
            used = unitfiles.exec_start_binary(text)
            if used and not (os.path.isfile(used) and os.access(used, os.X_OK)):
                print(f"  ExecStart= runs {used}, which is not an executable file: the service fails "
                      "with status=203/EXEC; run `traced service install` again")
    if have_manager():
        for verb in ("is-enabled", "is-active"):
            res = subprocess.run(["systemctl", "--user", verb, *unitfiles.UNITS], capture_output=True, text=True,
                                 timeout=15, check=False)
            states = res.stdout.split()
            print(f"systemctl --user {verb}: " + ", ".join(
                f"{u} {s}" for u, s in zip(unitfiles.UNITS, states, strict=False)))
    else:
        print(f"No {RUNNING} is reachable here (systemctl --user show-environment failed).")
    if not current:
        print("Run `traced service install` to install or update them.")
    return 0 if current else EXIT_ERROR


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``service`` command group to ``sub``."""
    p = sub.add_parser(
        "service", help="install traced as a systemd user service (socket-activated)",
        description="Install, remove or check traced's systemd user units (traced.socket, traced.service). "
                    "See docs/service.md.",
    )
    ssub = p.add_subparsers(dest="service_command", metavar="COMMAND", required=True)
    bin_help = ("the traced executable for ExecStart= (default: the one running, else the one beside this "
                "Python, else traced on PATH)")

    i = ssub.add_parser(
        "install", help="write the units to ~/.config/systemd/user and enable traced.socket",
        description="Write traced.socket and traced.service into ${XDG_CONFIG_HOME:-~/.config}/systemd/user/ "
                    "with ExecStart= naming the traced executable; when a systemd user manager answers, run "
                    "daemon-reload and enable --now traced.socket, otherwise print what to run later. "
                    "Every action is printed first; running it again is safe.",
    )
    i.add_argument("--bin", metavar="PATH", help=bin_help)
    i.add_argument("-n", "--dry-run", action="store_true", help="print the actions without taking them")
    i.set_defaults(func=cmd_install)

    u = ssub.add_parser(
        "uninstall", help="stop, disable and remove the units (sessions are kept)",
        description="Stop and disable traced.socket and traced.service, remove them and daemon-reload. "
                    "Sessions and state under ~/.local/state/traced are kept.",
    )
    u.add_argument("-n", "--dry-run", action="store_true", help="print the actions without taking them")
    u.set_defaults(func=cmd_uninstall)

    s = ssub.add_parser(
        "status", help="are the units installed and current, and are they enabled and active",
        description="Exit 0 when both units are installed as `traced service install` writes them now.",
    )
    s.add_argument("--bin", metavar="PATH", help=bin_help)
    s.set_defaults(func=cmd_status)
