"""The package's shape (docs/architecture.md): wings, no import cycles, light shell paths."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import Daemon

SRC = Path(__file__).resolve().parent.parent / "src" / "traced"
WINGS = {"format", "wire", "redaction", "daemon", "client", "read", "forward", "integrations", "cli", "ui"}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    return mods


def _imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Every traced module each module imports, TYPE_CHECKING and function-level imports included."""
    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        out = edges.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "traced":
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    out.add(full if full in mods else node.module)
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names if a.name.split(".")[0] == "traced")
        out.discard(name)
        out.discard("traced")  # the package's lazy __init__
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root, targets in edges.items():
        if root in index:
            continue
        work = [(root, iter(sorted(targets)))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            node, children = work[-1]
            child = next((c for c in children if c in edges), None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    top = stack.pop()
                    on.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_no_import_cycles() -> None:
    assert _cycles(_imports(_modules())) == []


def test_top_level_is_wings_and_a_few_shared_modules() -> None:
    entries = {p.name for p in SRC.iterdir() if p.name != "__pycache__"}
    assert len(entries) <= 16, sorted(entries)
    assert {p.name for p in SRC.iterdir() if p.is_dir() and p.name != "__pycache__"} == WINGS
    assert entries - WINGS == {"__init__.py", "__main__.py", "_version.py", "errors.py", "locations.py", "py.typed"}


@pytest.mark.parametrize("wing", sorted(WINGS - {"forward"}))
def test_wing_packages_are_empty(wing: str) -> None:
    """Sub-package ``__init__`` files stay empty, so the shell path pays nothing for the folders."""
    for init in (SRC / wing).rglob("__init__.py"):
        assert init.read_text() == "", init


def test_every_user_error_is_a_traced_error() -> None:
    """Only errors.py defines exception classes (two internal ones aside, which never reach a user: the
    journal's short write and the registry's ``Deferred`` open)."""
    defined = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(b, ast.Name) and (b.id.endswith(("Error", "Exception")) or b.id in {
                    "TracedError", "ReadError"}) for b in node.bases):
                defined.append((name, node.name))
    assert {m for m, _ in defined} <= {"traced.errors", "traced.daemon.journal", "traced.daemon.registry"}, defined
    assert [c for m, c in defined if m == "traced.daemon.registry"] == ["Deferred"]
    from traced import errors

    for _mod, cls in defined:
        obj = getattr(errors, cls, None)
        if obj is not None:
            assert issubclass(obj, errors.TracedError), cls


def _imported_by(code: str, stdin: str = "") -> list[str]:
    """Every module a snippet imports beyond the interpreter's start-up (run in a fresh interpreter)."""
    probe = (
        "import sys\n"
        "base = set(sys.modules)\n"
        f"{code}\n"
        "print('\\n'.join(sorted(m for m in set(sys.modules) - base)))\n"
    )
    res = subprocess.run([sys.executable, "-c", probe], input=stdin, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout.splitlines()


HEAVY = ("msgspec", "anyio", "argparse", "typing", "structlog", "watchfiles", "rich", "uvloop", "genai_prices",
         "pathlib", "dataclasses", "difflib", "json", "re", "enum", "socket", "selectors", "collections",
         "functools", "types", "importlib", "warnings", "inspect", "contextlib", "shutil", "locale", "gettext")
"""Never on a per-event path: a few ms each of a ~13 ms interpreter start-up (docs/benchmarks.md)."""
PER_EVENT_STDLIB = frozenset({"__future__", "_json", "_socket", "_struct", "struct", "errno", "select", "zlib"})
"""Every module outside traced a per-event path may import beyond the interpreter's own start-up."""


def _run_path(daemon: Daemon, argv: list[str], stdin: str = "") -> list[str]:
    """The modules a whole ``traced`` command (as the console script runs it) loads beyond the
    interpreter's start-up, run in a fresh interpreter against ``daemon``."""
    env = {k: daemon.env[k] for k in ("TRACED_SOCKET", "XDG_STATE_HOME", "XDG_RUNTIME_DIR")}
    probe = (
        "import os, sys\n"
        "base = set(sys.modules)\n"
        f"os.environ.update({env!r})\n"
        "from traced.cli.main import main\n"
        f"code = main({argv!r})\n"
        "sys.__stderr__.write('\\n'.join(sorted(set(sys.modules) - base)))\n"
        "sys.exit(code)\n"
    )
    res = subprocess.run([sys.executable, "-c", probe], input=stdin, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stderr.splitlines()


def _assert_light(loaded: list[str]) -> None:
    assert [m for m in loaded if m.split(".")[0] in HEAVY] == []
    assert sorted(m for m in loaded if m.split(".")[0] != "traced" and m not in PER_EVENT_STDLIB) == []


def test_traced_event_fast_path_imports_nothing_heavy(daemon: Daemon) -> None:
    """``traced event`` parses a plain line, fits the payload and talks through the stdlib client;
    beyond the interpreter's start-up it imports traced and ``PER_EVENT_STDLIB``, nothing else."""
    with daemon.client() as c:
        sid = c.session("light", owner_pid=-1).session_id
    loaded = _run_path(daemon, ["event", sid, "--phase", "note", "--payload", '{"message": "hi"}'])
    _assert_light(loaded)
    assert "traced.client.shell" in loaded
    rows = [json.loads(line) for line in daemon.cli("show", sid, "--json", check=True).stdout.splitlines()]
    assert [(r["step"], r["phase"]) for r in rows] == [(1, "start"), (2, "note")]
    assert rows[1]["payload"] == {"message": "hi"}


def _hook_events() -> list[tuple[str, str]]:
    """(agent, event) for every event each agent's install registers, and one it does not know."""
    from traced.integrations.hooks import install

    return [(agent, event) for agent in ("claude-code", "codex", "gemini")
            for event in [*install.install_events(agent), "SomeFutureEvent"]]


@pytest.mark.parametrize(("agent", "event"), _hook_events())
def test_every_hook_event_path_imports_nothing_heavy(agent: str, event: str) -> None:
    """Translating any hook event of any agent, timing it and sizing its payload imports traced
    and ``PER_EVENT_STDLIB``, nothing else (no json, re, msgspec, typing…)."""
    hook = json.dumps({"session_id": "s1", "hook_event_name": event, "tool_name": "Bash", "tool_use_id": "t1",
                       "tool_input": {"command": "ls"}, "tool_response": {"stdout": "x"}, "cwd": "/tmp",
                       "llm_request": {"model": "gemini-2.5-pro"},
                       "llm_response": {"candidates": [{"finishReason": "STOP"}],
                                        "usageMetadata": {"promptTokenCount": 3}}})
    code = (
        "from traced.cli import hook\n"
        "from traced.integrations.hooks import clocks, core, run\n"
        "from traced.wire import fit, minipack\n"
        f"plan = core.translate(core.parse({hook!r}), run.agent_named({agent!r}), run.options_from(), 0.0)\n"
        "plan.set_duration(None)\n"
        "for _phase, payload in plan.records:\n"
        "    minipack.packb(fit.fit(payload, run.max_event_bytes(0)))\n"
    )
    _assert_light(_imported_by(code))


_TOOL = {"tool_name": "Bash", "tool_input": {"command": "ls"}, "cwd": "/tmp", "transcript_path": "/tmp/t.jsonl"}


@pytest.mark.parametrize(("agent", "payload", "phase"), [
    ("claude-code", {"session_id": "cc-light", "hook_event_name": "PreToolUse", "tool_use_id": "toolu_1",
                     "permission_mode": "default", **_TOOL}, "tool_call"),
    ("codex", {"session_id": "cx-light", "hook_event_name": "PreToolUse", "tool_use_id": "call_1", "turn_id": "t1",
               "model": "gpt-5.1-codex", **_TOOL}, "tool_call"),
    ("gemini", {"session_id": "gm-light", "hook_event_name": "BeforeTool", **_TOOL,
                "tool_name": "run_shell_command"}, "tool_call"),
    ("claude-code", {"session_id": "cc-light-r", "hook_event_name": "PostToolUse", "tool_use_id": "toolu_1",
                     "tool_response": {"stdout": "a\nb", "stderr": "", "interrupted": False}, **_TOOL},
     "tool_result"),
    ("gemini", {"session_id": "gm-light-m", "hook_event_name": "AfterModel", "cwd": "/tmp",
                "llm_request": {"model": "gemini-2.5-pro"},
                "llm_response": {"candidates": [{"finishReason": "STOP"}],
                                 "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 2}}}, "llm_call"),
])
def test_hook_runs_import_nothing_heavy(daemon: Daemon, agent: str, payload: dict[str, object], phase: str) -> None:
    """A whole ``traced hook claude-code|codex|gemini`` run that writes a record, daemon and all,
    imports traced and ``PER_EVENT_STDLIB`` beyond the interpreter's start-up, nothing else."""
    loaded = _run_path(daemon, ["hook", agent], json.dumps(payload))
    assert "traced.integrations.hooks.run" in loaded and "traced.client.shell" in loaded
    _assert_light(loaded)
    [sdir] = daemon.root.glob(f"*/{agent}/{payload['session_id']}")
    phases = [json.loads(line)["phase"] for line in (sdir / "trace.jsonl").read_text().splitlines()]
    assert phases == ["start", phase]


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet="aZ09._-/ \n\u0660é", max_size=130) | st.text(max_size=6))
def test_valid_name_is_name_re(name: str) -> None:
    """Names are checked by hand on the hook path; ``NAME_RE`` (compiled on first use) says the same."""
    from traced.format import layout

    assert layout.valid_name(name) == (layout.NAME_RE.match(name) is not None)


def test_patterns_compile_on_first_use_then_stay() -> None:
    from traced.format import layout, vocab

    for module, name in ((layout, "NAME_RE"), (layout, "DATE_RE"), (layout, "BLOB_RE"), (vocab, "PHASE_RE")):
        pattern = getattr(module, name)
        assert isinstance(pattern, re.Pattern) and vars(module)[name] is pattern
    assert layout.valid_name("a" * 128) and not layout.valid_name("a" * 129) and not layout.valid_name(".a")
    assert layout.DATE_RE.match("2026-11-30") and not layout.DATE_RE.match("2026-11-300")
    assert layout.blob_digest({"$blob": "sha256:" + "ab" * 32, "size": 3}) == "ab" * 32
    assert vocab.PHASE_RE.match("tool_call") and not vocab.PHASE_RE.match("Tool")
    with pytest.raises(AttributeError):
        layout.NO_SUCH_RE  # noqa: B018
