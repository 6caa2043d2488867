"""``traced hook install claude-code|codex|gemini``: the settings each agent reads, merged in place."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon, read_trace
from traced.integrations.hooks import install

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"


def cli(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "traced", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "home").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CLAUDE_CONFIG_DIR", "CODEX_HOME")}
    # no agent on PATH: install registers every event (detection is tested with a stand-in)
    return {**env, "HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO / "src"),
            "PATH": os.path.dirname(sys.executable) + os.pathsep + "/usr/bin:/bin"}


def entries(settings: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """event -> our entries."""
    out: dict[str, list[dict[str, Any]]] = {}
    for event, groups in settings.get("hooks", {}).items():
        for group in groups if isinstance(groups, list) else []:
            for entry in group.get("hooks", []) if isinstance(group, dict) else []:
                if install.is_ours(entry):
                    out.setdefault(event, []).append(entry)
    return out


CLAUDE_EVENTS_31 = {
    "SessionStart", "Setup", "UserPromptSubmit", "UserPromptExpansion", "PreToolUse", "PermissionRequest",
    "PermissionDenied", "PostToolUse", "PostToolUseFailure", "PostToolBatch", "Notification", "MessageDisplay",
    "SubagentStart", "SubagentStop", "TaskCreated", "TaskCompleted", "Stop", "StopFailure", "TeammateIdle",
    "InstructionsLoaded", "ConfigChange", "CwdChanged", "DirectoryAdded", "FileChanged", "WorktreeCreate",
    "WorktreeRemove", "PreCompact", "PostCompact", "Elicitation", "ElicitationResult", "SessionEnd",
}
"""Claude Code's hooks reference, as of this writing."""


def test_claude_code_every_event_but_worktree_create_with_timeouts(home: dict[str, str], tmp_path: Path) -> None:
    """CLAUDE_CONFIG_DIR is honoured; every event of the reference is registered but WorktreeCreate;
    every entry has a timeout, SessionEnd's within its shared 1.5 s budget."""
    config = tmp_path / "claude-config"
    env = {**home, "CLAUDE_CONFIG_DIR": str(config)}
    res = cli("hook", "install", "claude-code", env=env)
    assert res.returncode == 0, res.stderr
    assert not (Path(home["HOME"]) / ".claude").exists()
    data = json.loads((config / "settings.json").read_text())
    ours = entries(data)
    assert set(ours) == CLAUDE_EVENTS_31 - {"WorktreeCreate"}
    assert "WorktreeCreate" not in data["hooks"]
    for event, [entry] in ours.items():
        assert isinstance(entry["timeout"], int) and entry["timeout"] >= 1, event
    assert ours["SessionEnd"][0]["timeout"] <= 1.5
    assert {e for e, groups in data["hooks"].items() if groups[0].get("matcher") == "*"} == {
        "PreToolUse", "PostToolUse", "PostToolUseFailure", "PermissionRequest", "PermissionDenied"}
    # user scope: the absolute path of this traced
    assert os.path.isabs(shlex.split(ours["Stop"][0]["command"])[0])


@pytest.mark.parametrize("version", [None, "2.1.70", "2.1.90", "9.0.0"])
def test_worktree_create_is_never_registered_and_a_stale_one_of_ours_is_removed(
        home: dict[str, str], tmp_path: Path, version: str | None) -> None:
    """A hook on WorktreeCreate replaces git's worktree creation: whatever the version, install writes
    none, removes one an older traced left, and keeps the user's own."""
    settings = tmp_path / "settings.json"
    own = {"type": "command", "command": "~/bin/make-worktree.sh"}
    settings.write_text(json.dumps({"hooks": {"WorktreeCreate": [
        {"hooks": [own, {"type": "command", "command": "/old/bin/traced hook claude-code"}]}]}}))
    args = ["--agent-version", version] if version else []
    res = cli("hook", "install", "claude-code", "--settings", str(settings), *args, env=home)
    assert res.returncode == 0, res.stderr
    data = json.loads(settings.read_text())
    assert data["hooks"]["WorktreeCreate"] == [{"hooks": [own]}]
    assert "WorktreeCreate" not in entries(data)
    assert all("WorktreeCreate" not in install.install_events(a) for a in ("claude-code", "codex", "gemini"))


def test_claude_code_events_follow_the_installed_version(home: dict[str, str], tmp_path: Path) -> None:
    """An older Claude Code skips a whole settings file naming an event it does not know: install asks
    ``claude --version`` and registers only what that version has; a later install adds the rest."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "claude"
    fake.write_text("#!/bin/sh\necho '2.1.80 (Claude Code)'\n")
    fake.chmod(0o755)
    env = {**home, "PATH": f"{bindir}{os.pathsep}{home['PATH']}"}
    settings = tmp_path / "settings.json"
    res = cli("hook", "install", "claude-code", "--settings", str(settings), env=env)
    assert res.returncode == 0, res.stderr
    assert "claude-code 2.1.80 does not know 12 newer hook events" in res.stderr
    ours = set(entries(json.loads(settings.read_text())))
    assert {"StopFailure", "PostCompact", "TaskCompleted", "PermissionRequest"} <= ours
    assert not {"PermissionDenied", "TaskCreated", "UserPromptExpansion", "PostToolBatch"} & ours
    fake.write_text("#!/bin/sh\necho '2.1.130 (Claude Code)'\n")
    res = cli("hook", "install", "claude-code", "--settings", str(settings), env=env)
    assert res.returncode == 0 and "does not know" not in res.stderr
    assert set(entries(json.loads(settings.read_text()))) == CLAUDE_EVENTS_31 - {"WorktreeCreate"}


def test_project_install_writes_a_command_for_everyone_who_clones(daemon: Daemon, tmp_path: Path) -> None:
    """--project writes ``traced hook <agent>`` found on PATH, not a path into this machine's venv;
    that command records when the agent runs it through a shell."""
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    env = {**daemon.env, "HOME": str(tmp_path), "PATH": os.path.dirname(sys.executable) + os.pathsep + "/usr/bin:/bin"}
    for agent, rel in (("claude-code", ".claude/settings.json"), ("codex", ".codex/hooks.json"),
                       ("gemini", ".gemini/settings.json")):
        res = cli("hook", "install", agent, "--project", "--skill", f"team-{agent}", env=env, cwd=repo)
        assert res.returncode == 0, res.stderr
        data = json.loads((repo / rel).read_text())
        commands = {e["command"] for es in entries(data).values() for e in es}
        assert commands == {f"traced hook {agent} --skill team-{agent}"}
    start = json.loads((FIXTURES / "gemini" / "01-session-start.json").read_text())
    [entry] = entries(json.loads((repo / ".gemini/settings.json").read_text()))["SessionStart"]
    run = subprocess.run(["/bin/sh", "-c", entry["command"]], input=json.dumps(start), env=env,
                         capture_output=True, text=True, timeout=60)
    assert (run.returncode, run.stdout, run.stderr) == (0, "", "")
    [sdir] = daemon.root.glob(f"*/team-gemini/{start['session_id']}")
    assert [r["phase"] for r in read_trace(sdir / "trace.jsonl")] == ["start"]


CODEX_ORIGINAL = {"hooks": {"PreToolUse": [{"matcher": "Bash", "hooks": [
    {"type": "command", "command": "python3 ~/.codex/guard.py", "timeout": 10}]}]}}


def test_codex_install_idempotent_integer_timeouts_and_uninstall_restores(home: dict[str, str],
                                                                          tmp_path: Path) -> None:
    codex_home = tmp_path / "codex-home"
    codex_home.mkdir()
    hooks_json = codex_home / "hooks.json"
    original = json.dumps(CODEX_ORIGINAL, indent=2) + "\n"
    hooks_json.write_text(original)
    env = {**home, "CODEX_HOME": str(codex_home)}
    res = cli("hook", "install", "codex", env=env)
    assert res.returncode == 0, res.stderr
    assert "codex_hooks" in res.stderr  # the feature flag Codex needs, said once
    text = hooks_json.read_text()
    data = json.loads(text)
    ours = entries(data)
    assert set(ours) == {"SessionStart", "UserPromptSubmit", "PreToolUse", "PostToolUse", "Stop", "PreCompact",
                         "PostCompact", "SubagentStart", "SubagentStop", "StopFailure"}
    for event, [entry] in ours.items():
        # Codex refuses the whole hooks.json when a timeout is a JSON float
        assert type(entry["timeout"]) is int and entry == {"type": "command", "command": entry["command"],
                                                           "timeout": 2}, event
    assert '"timeout": 2.0' not in text and '"timeout": 2' in text
    assert data["hooks"]["PreToolUse"][0] == CODEX_ORIGINAL["hooks"]["PreToolUse"][0]
    assert all("matcher" not in g for e, gs in data["hooks"].items() for g in gs if e != "PreToolUse")
    assert data["hooks"]["PreToolUse"][1] == {"hooks": ours["PreToolUse"]}
    res = cli("hook", "install", "codex", env=env)
    assert res.returncode == 0 and res.stdout == "" and hooks_json.read_text() == text
    res = cli("hook", "install", "codex", "--uninstall", env=env)
    assert res.returncode == 0 and hooks_json.read_text() == original


GEMINI_ORIGINAL = {
    "model": {"name": "gemini-2.5-pro"},
    "hooksConfig": {"enabled": True},
    "hooks": {
        "enabled": ["*"],  # gemini-cli#17831: an array in some versions; not an event list, left alone
        "BeforeTool": [{"matcher": "run_shell_command", "hooks": [
            {"type": "command", "command": "$GEMINI_PROJECT_DIR/.gemini/hooks/guard.sh", "name": "guard",
             "timeout": 5000}]}],
    },
}


def test_gemini_install_keeps_other_settings_milliseconds_and_uninstall_restores(home: dict[str, str]) -> None:
    settings = Path(home["HOME"]) / ".gemini" / "settings.json"
    settings.parent.mkdir()
    original = json.dumps(GEMINI_ORIGINAL, indent=2) + "\n"
    settings.write_text(original)
    res = cli("hook", "install", "gemini", env=home)
    assert res.returncode == 0, res.stderr
    text = settings.read_text()
    data = json.loads(text)
    ours = entries(data)
    assert set(ours) == {"SessionStart", "SessionEnd", "BeforeAgent", "AfterAgent", "BeforeModel", "AfterModel",
                         "BeforeTool", "AfterTool", "PreCompress", "Notification"}
    command = ours["AfterModel"][0]["command"]
    assert shlex.split(command)[-2:] == ["hook", "gemini"]
    for event, [entry] in ours.items():
        assert entry == {"type": "command", "command": command, "timeout": 2000, "name": "traced"}, event
    for key in ("model", "hooksConfig"):
        assert data[key] == GEMINI_ORIGINAL[key]
    assert data["hooks"]["enabled"] == ["*"]
    assert data["hooks"]["BeforeTool"][0] == GEMINI_ORIGINAL["hooks"]["BeforeTool"][0]  # type: ignore[index]
    assert data["hooks"]["BeforeTool"][1] == {"hooks": ours["BeforeTool"]}  # no matcher: every tool
    res = cli("hook", "install", "gemini", env=home)
    assert res.returncode == 0 and settings.read_text() == text
    res = cli("hook", "install", "gemini", "--uninstall", env=home)
    assert res.returncode == 0 and settings.read_text() == original


def test_install_of_one_agent_leaves_the_others_entries(tmp_path: Path) -> None:
    """One settings file may hold entries for two agents (a shared dotfile): each install and
    uninstall touches its own agent's only."""
    both = install.merge_settings({}, "/x/traced hook claude-code", "claude-code", ["Stop"])
    both["hooks"]["AfterAgent"] = [{"hooks": [{"type": "command", "command": "/x/traced hook gemini"}]}]
    assert install.merge_settings(both, None, "claude-code") == {
        "hooks": {"AfterAgent": [{"hooks": [{"type": "command", "command": "/x/traced hook gemini"}]}]}}
    with pytest.raises(ValueError, match=r"hooks\.Stop"):
        install.merge_settings({"hooks": {"Stop": {"oops": 1}}}, "/x/traced hook codex", "codex")
