"""The package's shape (docs/architecture.md): wings, no import cycles, light shell paths."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

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
    """Only errors.py defines exception classes (the journal's internal short write aside)."""
    defined = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(b, ast.Name) and (b.id.endswith(("Error", "Exception")) or b.id in {
                    "TracedError", "ReadError"}) for b in node.bases):
                defined.append((name, node.name))
    assert {m for m, _ in defined} <= {"traced.errors", "traced.daemon.journal"}, defined
    from traced import errors

    for _mod, cls in defined:
        obj = getattr(errors, cls, None)
        if obj is not None:
            assert issubclass(obj, errors.TracedError), cls


def _imported_by(code: str, stdin: str = "") -> list[str]:
    """The traced and third-party modules a snippet imports (run in a fresh interpreter)."""
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
         "pathlib", "dataclasses", "difflib")


def test_traced_event_fast_path_imports_nothing_heavy(daemon: Daemon) -> None:
    """``traced event`` parses a plain line, fits the payload and talks through the stdlib client."""
    with daemon.client() as c:
        sid = c.session("light", owner_pid=-1).session_id
    code = (
        "import sys\n"
        "from traced.cli import main\n"
        f"code = main.main(['event', {sid!r}, '--phase', 'note', '--payload', '{{\"message\": \"hi\"}}'])\n"
        "assert code == 0, code\n"
    )
    probe = "import os\nos.environ.update(%r)\n" % {k: daemon.env[k] for k in (
        "TRACED_SOCKET", "XDG_STATE_HOME", "XDG_RUNTIME_DIR")}
    loaded = _imported_by(probe + code)
    assert [m for m in loaded if m.split(".")[0] in HEAVY] == []
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
    """Translating any hook event of any agent, timing it and sizing its payload pulls in no
    msgspec, anyio, argparse, typing, pathlib or dataclasses."""
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
    loaded = _imported_by(code)
    assert [m for m in loaded if m.split(".")[0] in HEAVY] == []


@pytest.mark.parametrize(("agent", "payload"), [
    ("codex", {"session_id": "cx-light", "hook_event_name": "PreToolUse", "tool_name": "Bash", "cwd": "/tmp",
               "tool_use_id": "call_1", "tool_input": {"command": "ls"}, "turn_id": "t1", "model": "gpt-5.1-codex"}),
    ("gemini", {"session_id": "gm-light", "hook_event_name": "AfterModel", "cwd": "/tmp",
                "llm_request": {"model": "gemini-2.5-pro"},
                "llm_response": {"candidates": [{"finishReason": "STOP"}],
                                 "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 2}}}),
])
def test_codex_and_gemini_hook_runs_import_nothing_heavy(daemon: Daemon, agent: str,
                                                         payload: dict[str, object]) -> None:
    """A whole ``traced hook codex|gemini`` run, daemon and all, stays on the light path."""
    code = (
        "import sys\n"
        "from traced.cli import main\n"
        f"assert main.main(['hook', {agent!r}]) == 0\n"
    )
    probe = "import os\nos.environ.update(%r)\n" % {k: daemon.env[k] for k in (
        "TRACED_SOCKET", "XDG_STATE_HOME", "XDG_RUNTIME_DIR")}
    res = subprocess.run([sys.executable, "-c", (
        "import sys\nbase = set(sys.modules)\n" + probe + code +
        "sys.__stderr__.write('\\n'.join(sorted(m for m in set(sys.modules) - base)))\n")],
        input=json.dumps(payload), capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout == "", res.stderr
    loaded = res.stderr.splitlines()
    assert "traced.integrations.hooks.run" in loaded
    assert [m for m in loaded if m.split(".")[0] in HEAVY] == []
    [sdir] = daemon.root.glob(f"*/{agent}/{payload['session_id']}")
    phases = [json.loads(line)["phase"] for line in (sdir / "trace.jsonl").read_text().splitlines()]
    assert phases == ["start", "tool_call" if agent == "codex" else "llm_call"]
