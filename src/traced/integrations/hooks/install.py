"""``traced hook install <agent>``: add or remove traced's entries in an agent's hook settings.

Claude Code (``settings.json``), Codex (``hooks.json``) and Gemini CLI
(``settings.json``) share one shape: ``{"hooks": {Event: [{"matcher"?,
"hooks": [{"type": "command", "command", "timeout"}]}]}}``. ``merge_settings``
is pure; ``install`` reads, merges, and writes atomically (a symlinked settings
file stays a symlink). Nothing else in the file changes. Which events and
which timeouts (whole seconds for Claude Code and Codex, milliseconds for
Gemini CLI) come from the agent's table module.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

AGENT_MODULES = {"claude-code": "claude_code", "codex": "codex", "gemini": "gemini"}


def table(agent: str) -> ModuleType:
    """The agent's table module (``INSTALL_EVENTS``, ``TOOL_EVENTS``, ``TIMEOUTS``, ``TIMEOUT``)."""
    import importlib

    return importlib.import_module(f"traced.integrations.hooks.{AGENT_MODULES[agent]}")


def install_events(agent: str, version: tuple[int, ...] | None = None) -> list[str]:
    """The events to register for ``agent``: all of its table's, or, for a known agent
    ``version``, those that version has (an older Claude Code skips a whole settings file
    that names an event it does not know). Never WorktreeCreate."""
    mod = table(agent)
    never: frozenset[str] = getattr(mod, "NEVER_REGISTERED", frozenset())
    return [event for event, since in mod.INSTALL_EVENTS
            if event not in never and (version is None or tuple(since) <= version)]


def agent_version(agent: str) -> tuple[int, ...] | None:
    """The installed agent's version from ``<agent> --version`` (``claude`` for Claude Code),
    or None when it is not on PATH or says nothing like ``2.1.78``."""
    import shutil
    import subprocess

    exe = shutil.which({"claude-code": "claude"}.get(agent, agent))
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--version"], check=False, capture_output=True, text=True, timeout=10,
                             stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_version(out)


def parse_version(text: str) -> tuple[int, ...] | None:
    """``(2, 1, 78)`` from ``"2.1.78 (Claude Code)"``; None when there is no dotted version."""
    import re

    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if m is None:
        return None
    return tuple(int(g) for g in m.groups(default="0"))


def traced_argv() -> list[str]:
    """How to run this ``traced``: the running executable, else the venv's, else PATH's."""
    import shutil
    import sys

    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "traced" and os.access(argv0, os.X_OK):
        return [os.path.abspath(argv0)]
    sibling = os.path.join(os.path.dirname(sys.executable), "traced")
    if os.access(sibling, os.X_OK):
        return [sibling]
    found = shutil.which("traced")
    if found:
        return [os.path.abspath(found)]
    return [sys.executable, "-m", "traced.cli.main"]


def hook_command(argv: list[str] | None = None, extra: list[str] | None = None, agent: str = "claude-code",
                 portable: bool = False) -> str:
    """The shell command the agent runs: ``<abs path to traced> hook <agent> [options]``, or with
    ``portable`` (a project's settings, shared by everyone who clones it) ``traced hook <agent>``
    resolved from PATH."""
    import shlex

    base = ["traced"] if portable else (argv or traced_argv())
    return shlex.join([*base, "hook", agent, *(extra or [])])


def is_ours(entry: Any, agent: str | None = None) -> bool:
    """Whether a settings hook entry runs ``traced … hook <agent>`` (any agent when None)."""
    import shlex

    if not isinstance(entry, dict) or not isinstance(entry.get("command"), str):
        return False
    try:
        tokens = shlex.split(entry["command"])
    except ValueError:
        return False
    for i in range(1, len(tokens) - 1):
        if tokens[i] == "hook" and (tokens[i + 1] == agent if agent else tokens[i + 1] in AGENT_MODULES):
            return any(os.path.basename(t) == "traced" or t == "traced.cli.main" for t in tokens[:i])
    return False


def hook_entry(agent: str, event: str, command: str) -> dict[str, Any]:
    """Our entry for ``event``: ``{"type": "command", "command", "timeout"[, "name"]}``."""
    mod = table(agent)
    entry: dict[str, Any] = {"type": "command", "command": command,
                             "timeout": mod.TIMEOUTS.get(event, mod.TIMEOUT)}
    if agent == "gemini":
        entry["name"] = "traced"
    return entry


def merge_settings(settings: dict[str, Any], command: str | None, agent: str = "claude-code",
                   events: list[str] | None = None) -> dict[str, Any]:
    """A copy of ``settings`` with our hook entries for ``events`` (default: all the agent's)
    installed (``command``) or removed (None).

    Nothing else changes: other keys, other hooks and their order stay. An
    entry of ours that is already the wanted one (command and timeout) stays
    where it is (so a second install changes nothing); older entries of ours
    (another path, other options, an event no longer registered) are removed.
    Containers our removal empties are dropped. Raises ValueError when
    ``hooks``, or the list of an event we register, has the wrong type.
    """
    wanted = (install_events(agent) if events is None else events) if command is not None else []
    tool_events = table(agent).TOOL_EVENTS
    out: dict[str, Any] = json.loads(json.dumps(settings))
    hooks = out.get("hooks")
    had_hooks = isinstance(hooks, dict) and bool(hooks)
    if hooks is None:
        hooks = {}
    if not isinstance(hooks, dict):
        raise ValueError("settings key 'hooks' is not an object")
    for event in list(wanted) + [e for e in hooks if e not in wanted]:
        groups = hooks.get(event)
        if groups is not None and not isinstance(groups, list):
            if event in wanted:
                raise ValueError(f"settings key 'hooks.{event}' is not a list")
            continue  # not an event list (Gemini CLI's hooks.enabled…): not ours to touch
        want = hook_entry(agent, event, command) if command is not None and event in wanted else None
        had_groups = bool(groups)
        present = False
        kept_groups: list[Any] = []
        for group in groups or []:
            entries = group.get("hooks") if isinstance(group, dict) else None
            if not isinstance(entries, list):
                kept_groups.append(group)
                continue
            kept: list[Any] = []
            for entry in entries:
                if not is_ours(entry, agent):
                    kept.append(entry)
                elif want is not None and not present and entry == want:
                    present = True
                    kept.append(entry)
            if kept or not entries:
                kept_groups.append({**group, "hooks": kept} if len(kept) != len(entries) else group)
        if want is not None and not present:
            kept_groups.append({"matcher": "*", "hooks": [want]} if event in tool_events else {"hooks": [want]})
        if kept_groups or (groups is not None and not had_groups):
            hooks[event] = kept_groups
        else:
            hooks.pop(event, None)
    if hooks or ("hooks" in out and not had_hooks):
        out["hooks"] = hooks
    else:
        out.pop("hooks", None)
    return out


def settings_path(scope: str, cwd: str | None = None, agent: str = "claude-code") -> Path:
    """Where ``agent`` reads hooks, for ``scope`` user or project.

    Claude Code: ``$CLAUDE_CONFIG_DIR`` (default ``~/.claude``)``/settings.json``, or
    ``<git root or cwd>/.claude/settings.json``. Codex: ``$CODEX_HOME`` (default
    ``~/.codex``)``/hooks.json``, or ``<root>/.codex/hooks.json``. Gemini CLI:
    ``~/.gemini/settings.json``, or ``<root>/.gemini/settings.json``.
    """
    folder, name, env = {"claude-code": (".claude", "settings.json", "CLAUDE_CONFIG_DIR"),
                         "codex": (".codex", "hooks.json", "CODEX_HOME"),
                         "gemini": (".gemini", "settings.json", "")}[agent]
    if scope == "user":
        configured = os.environ.get(env) if env else None
        base = Path(configured).expanduser() if configured else Path.home() / folder
        return base / name
    here = Path(cwd or os.getcwd()).absolute()
    for candidate in (here, *here.parents):
        if (candidate / ".git").exists():
            return candidate / folder / name
    return here / folder / name


def _indent(text: str) -> str | int:
    for line in text.splitlines()[1:]:
        stripped = line.lstrip()
        if stripped and len(stripped) < len(line):
            return line[: len(line) - len(stripped)]
    return 2


def render(settings: dict[str, Any], original: str) -> str:
    """``settings`` as JSON in the original file's indentation, with a final newline."""
    return json.dumps(settings, indent=_indent(original) if original else 2, ensure_ascii=False) + "\n"


class InstallResult:
    """What ``install`` did: the file, its text before and after, the diff."""

    __slots__ = ("after", "before", "diff", "path", "written")

    def __init__(self, path: Path, before: str, after: str, diff: str, written: bool) -> None:
        self.path = path
        self.before = before
        self.after = after
        self.diff = diff
        self.written = written

    @property
    def changed(self) -> bool:
        """Whether the settings change (or would, with --dry-run)."""
        return self.before != self.after


def install(path: Path, command: str, uninstall: bool = False, dry_run: bool = False, *, agent: str = "claude-code",
            events: list[str] | None = None) -> InstallResult:
    """Merge our hook entries for ``events`` (default: all the agent's) into (or out of) the
    settings file at ``path``. Raises ValueError for a file that is not a JSON object, OSError."""
    import difflib

    try:
        before = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        before = ""
    try:
        current = json.loads(before) if before.strip() else {}
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); fix it first, nothing was changed") from None
    if not isinstance(current, dict):
        raise ValueError(f"{path}: the settings are not a JSON object; nothing was changed")
    merged = merge_settings(current, None if uninstall else command, agent, events)
    after = before if merged == current else render(merged, before)
    diff = "".join(difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True),
        fromfile=f"a/{path}" if before else "/dev/null", tofile=f"b/{path}",
    ))
    written = False
    if after != before and not dry_run:
        _write_atomic(path, after)
        written = True
    return InstallResult(path, before, after, diff, written)


def _write_atomic(path: Path, text: str) -> None:
    target = Path(os.path.realpath(path))  # a symlinked settings.json (dotfiles) stays a symlink
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = os.stat(target).st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644
    tmp = target.with_name(f".{target.name}.traced-{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        data = text.encode("utf-8")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, target)
