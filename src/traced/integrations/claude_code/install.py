"""``traced hook install claude-code``: add or remove traced's entries in Claude Code's settings.json.

``merge_settings`` is pure; ``install`` reads, merges, and writes atomically
(a symlinked settings file stays a symlink). Nothing else in the file changes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from traced.integrations.claude_code.translate import HOOK_EVENTS, TOOL_EVENTS


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


def hook_command(argv: list[str] | None = None, extra: list[str] | None = None) -> str:
    """The shell command Claude Code runs: ``<abs path to traced> hook claude-code [options]``."""
    import shlex

    return shlex.join([*(argv or traced_argv()), "hook", "claude-code", *(extra or [])])


def is_ours(entry: Any) -> bool:
    """Whether a settings hook entry runs ``traced … hook claude-code``."""
    import shlex

    if not isinstance(entry, dict) or not isinstance(entry.get("command"), str):
        return False
    try:
        tokens = shlex.split(entry["command"])
    except ValueError:
        return False
    for i in range(1, len(tokens) - 1):
        if tokens[i] == "hook" and tokens[i + 1] == "claude-code":
            return any(os.path.basename(t) == "traced" or t == "traced.cli.main" for t in tokens[:i])
    return False


def merge_settings(settings: dict[str, Any], command: str | None) -> dict[str, Any]:
    """A copy of ``settings`` with our hook entries installed (``command``) or removed (None).

    Nothing else changes: other keys, other hooks and their order stay. An
    entry of ours that already runs ``command`` stays where it is (so a second
    install changes nothing); older entries of ours (another path, other
    options) are replaced. Containers our removal empties are dropped.
    """
    out: dict[str, Any] = json.loads(json.dumps(settings))
    hooks = out.get("hooks")
    had_hooks = isinstance(hooks, dict) and bool(hooks)
    if hooks is None:
        hooks = {}
    if not isinstance(hooks, dict):
        raise ValueError("settings key 'hooks' is not an object")
    events = list(HOOK_EVENTS) + [e for e in hooks if e not in HOOK_EVENTS]
    for event in events:
        groups = hooks.get(event)
        if groups is not None and not isinstance(groups, list):
            raise ValueError(f"settings key 'hooks.{event}' is not a list")
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
                if not is_ours(entry):
                    kept.append(entry)
                elif command is not None and not present and entry.get("command") == command:
                    present = True
                    kept.append(entry)
            if kept or not entries:
                kept_groups.append({**group, "hooks": kept} if len(kept) != len(entries) else group)
        if command is not None and not present and event in HOOK_EVENTS:
            entry = {"type": "command", "command": command}
            kept_groups.append({"matcher": "*", "hooks": [entry]} if event in TOOL_EVENTS else {"hooks": [entry]})
        if kept_groups or (groups is not None and not had_groups):
            hooks[event] = kept_groups
        else:
            hooks.pop(event, None)
    if hooks or ("hooks" in out and not had_hooks):
        out["hooks"] = hooks
    else:
        out.pop("hooks", None)
    return out


def settings_path(scope: str, cwd: str | None = None) -> Path:
    """``~/.claude/settings.json`` (user) or ``<git root or cwd>/.claude/settings.json`` (project)."""
    if scope == "user":
        return Path.home() / ".claude" / "settings.json"
    here = Path(cwd or os.getcwd()).absolute()
    for candidate in (here, *here.parents):
        if (candidate / ".git").exists():
            return candidate / ".claude" / "settings.json"
    return here / ".claude" / "settings.json"


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


def install(path: Path, command: str, uninstall: bool = False, dry_run: bool = False) -> InstallResult:
    """Merge our hook entries into (or out of) the settings file at ``path``."""
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
    merged = merge_settings(current, None if uninstall else command)
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
