"""Docs that cannot rot: every shell and Python example in README.md and docs/*.md runs here.

Each fenced block whose info string is ``sh``, ``bash``, ``shell``, ``console`` or
``python`` runs against a real ``traced serve`` in a fresh temporary HOME (no
XDG_STATE_HOME or XDG_CONFIG_HOME, so ``~/.local/state/traced`` is where it is for a
new user), with ``$XDG_RUNTIME_DIR`` set, ``TRACED_SOCKET`` at the default path and
the venv's ``traced`` first on PATH. The blocks of one file run in order, in one
state: the shell variables, functions and working directory a block leaves are
there for the next (a walkthrough works); Python blocks run in that directory.
Shell blocks run with ``set -e``: every command must succeed, so an expected
non-zero exit is written in the doc (``traced status || test $? -eq 3``). A
``console`` block runs its ``$ `` lines (a line ending in ``\\`` continues on the
next); the other lines are sample output and are not compared.

A block is not run when the line directly above its fence is
``<!-- docs-test: skip (reason) -->``; a marker without a reason, or anywhere else,
fails. ``text``, ``toml``, ``json`` and unlabelled blocks are never run.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import wait_for

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL = {"sh", "bash", "shell", "console"}
RUN = SHELL | {"python"}
NOT_RUN = {"", "text", "toml", "json", "jsonl", "yaml", "ini", "diff", "systemd"}
"""Labels for samples and output; any other label is an error (a ```shell-session or ```py block
would otherwise escape the test by its spelling)."""
BLOCK_TIMEOUT = 30.0

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\s`]*)")
MARKER = re.compile(r"<!--\s*docs-test:(?P<body>.*?)-->")
SKIP = re.compile(r"^\s*skip\s*\((?P<reason>[^)]*\S[^)]*)\)\s*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    skip: str | None  # the reason, when marked to skip

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO) if self.path.is_relative_to(REPO) else self.path}:{self.line}"


def parse(path: Path) -> tuple[list[Block], list[str]]:
    """The fenced blocks of a Markdown file, and the problems with its docs-test markers."""
    lines = path.read_text(encoding="utf-8").splitlines()
    rel = path.relative_to(REPO) if path.is_relative_to(REPO) else path.name
    blocks: list[Block] = []
    problems: list[str] = []
    used: set[int] = set()  # line indexes of markers that sit above a fence
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = len(m["indent"]), m["fence"], m["info"].lower()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines):
            stripped = lines[i].strip()
            if stripped.startswith(fence[0] * len(fence)) and not stripped.strip(fence[0]):
                break
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i].lstrip())
            i += 1
        i += 1
        skip = None
        above = lines[start - 1] if start else ""
        marker = MARKER.search(above) if above.lstrip().startswith("<!--") else None
        if marker:
            used.add(start - 1)
            reason = SKIP.match(marker["body"])
            if reason is None:
                problems.append(f"{rel}:{start}: a docs-test marker must be `skip (reason)`: {above.strip()}")
            elif lang not in RUN | {"toml"}:  # toml: "not traced's config" (an agent's own file)
                problems.append(f"{rel}:{start}: a skip marker above a ```{lang or '(no language)'} block, "
                                "which never runs: drop the marker")
            else:
                skip = reason["reason"].strip()
        if lang not in RUN | NOT_RUN:
            problems.append(f"{rel}:{start + 1}: ```{lang}: label runnable blocks sh, bash, shell, console or "
                            f"python, and samples one of {', '.join(sorted(NOT_RUN - {''}))}")
        blocks.append(Block(path, start + 1, lang, "\n".join(body) + "\n", skip))
    for no, line in enumerate(lines):
        if line.lstrip().startswith("<!--") and MARKER.search(line) and no not in used:  # not a `mention`
            problems.append(f"{rel}:{no + 1}: a docs-test marker must be on the line directly above a fence")
    return blocks, problems


def console_commands(code: str) -> str:
    """The ``$ `` lines of a console block (with their ``\\`` continuations), as a script."""
    out: list[str] = []
    cont = False
    for line in code.splitlines():
        if cont:
            out.append(line[2:] if line.startswith("> ") else line)  # a continuation, with its PS2 prompt
        elif line.startswith("$ "):
            out.append(line[2:])
        else:
            continue
        cont = line.endswith("\\")
    return "\n".join(out) + "\n"


def runnable(path: Path) -> list[Block]:
    return [b for b in parse(path)[0] if b.lang in RUN and b.skip is None]


def test_markers_are_well_formed() -> None:
    problems = [p for path in DOCS for p in parse(path)[1]]
    assert problems == []


def test_the_parser_on_a_sample(tmp_path: Path) -> None:
    """Controls for the extractor: indented fences, console lines, skip reasons, bad markers."""
    sample = tmp_path / "sample.md"
    sample.write_text(
        "x\n```sh\necho one\n```\n"
        "<!-- docs-test: skip (needs a real agent) -->\n```bash\nfalse\n```\n"
        "- item\n  ```console\n  $ traced ls \\\n  >   --json\n  {\"a\": 1}\n  $ echo two\n  two\n  ```\n"
        "<!-- docs-test: skip -->\n```python\nprint(1)\n```\n"
        "<!-- docs-test: skip (reason) -->\n\n```sh\necho far\n```\n"
        "```text\n$ not run\n```\n"
        "```shell-session\n$ escapes\n```\n")
    blocks, problems = parse(sample)
    assert [(b.line, b.lang, b.skip) for b in blocks] == [
        (2, "sh", None), (6, "bash", "needs a real agent"), (10, "console", None), (18, "python", None),
        (23, "sh", None), (26, "text", None), (29, "shell-session", None)]
    assert console_commands(blocks[2].code) == "traced ls \\\n  --json\necho two\n"
    assert problems == [
        "sample.md:17: a docs-test marker must be `skip (reason)`: <!-- docs-test: skip -->",
        "sample.md:29: ```shell-session: label runnable blocks sh, bash, shell, console or python, and samples "
        "one of diff, ini, json, jsonl, systemd, text, toml, yaml",
        "sample.md:21: a docs-test marker must be on the line directly above a fence",
    ]


# --- running them -------------------------------------------------------------------


class Shell:
    """One fresh user's shell state for a file's blocks, and the daemon they talk to."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.home = base / "home"
        self.work = base / "work"
        self.run_dir = base / "run"
        self.state = base / "shell.state"
        self.cwd_file = base / "shell.cwd"
        self.scratch = base / "scratch"
        for d in (self.home, self.work, self.scratch):
            d.mkdir()
        self.run_dir.mkdir(mode=0o700)
        self.socket = self.run_dir / "traced" / "traced.sock"
        self.cwd_file.write_text(str(self.work))
        drop = ("XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "STATE_DIRECTORY",
                "RUNTIME_DIRECTORY", "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "PYTHONPATH", "CDPATH", "ENV",
                "BASH_ENV", "OLDPWD")
        env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("TRACED_")}
        env.update(HOME=str(self.home), XDG_RUNTIME_DIR=str(self.run_dir), TRACED_SOCKET=str(self.socket),
                   PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
                   PYTHONUNBUFFERED="1", __DT_STATE=str(self.state), __DT_CWD=str(self.cwd_file),
                   __DT_BASE=str(base / "shell.base"))
        self.env = env
        # bash's own variables (PATH aside): not carried from one block to the next
        names = subprocess.run(["env", "-i", "bash", "--norc", "--noprofile", "-c", "compgen -v"],
                               capture_output=True, text=True, check=True).stdout.split()
        (base / "shell.base").write_text("\n".join(n for n in names if n != "PATH") + "\n")
        self.daemon: subprocess.Popen[bytes] | None = None
        self.log = base / "daemon.log"

    def start_daemon(self) -> None:
        with open(self.log, "ab") as logf:
            self.daemon = subprocess.Popen([sys.executable, "-m", "traced", "serve", "--log-format", "json"],
                                           env=self.env, stdout=logf, stderr=logf, cwd=self.work)

        def accepting() -> bool:
            assert self.daemon is not None
            if self.daemon.poll() is not None:
                raise AssertionError(f"daemon exited {self.daemon.returncode}:\n{self.log.read_text()}")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(str(self.socket))
                except OSError:
                    return False
                return True

        wait_for(accepting, 60, what=lambda: f"the daemon to accept; its log:\n{self.log.read_text()}")

    def stop_daemon(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(15)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait(10)

    def run(self, block: Block) -> tuple[int, str]:
        """Run one block; its exit code and its output (stdout and stderr together)."""
        out_path = self.scratch / f"{block.line}.out"
        cwd = self.cwd_file.read_text().strip() or str(self.work)
        if block.lang == "python":
            script = self.scratch / f"block_{block.line}.py"
            script.write_text(block.code)
            cmd = [sys.executable, str(script)]
        else:
            code = console_commands(block.code) if block.lang == "console" else block.code
            script = self.scratch / f"block_{block.line}.sh"
            # one prelude line, so that line N of the script is line N-1 of the block
            script.write_text(
                'if [ -f "$__DT_STATE" ]; then . "$__DT_STATE"; fi; '
                '__dt_save() { { declare -p $(compgen -v | grep -vxFf "$__DT_BASE") 2>/dev/null; declare -f; } '
                '> "$__DT_STATE"; pwd > "$__DT_CWD"; }; trap __dt_save EXIT; set -e\n' + code)
            cmd = ["bash", "--norc", "--noprofile", str(script)]
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(cmd, env=self.env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                code_ = proc.wait(BLOCK_TIMEOUT)
            except subprocess.TimeoutExpired:
                code_ = -1
            finally:
                try:  # whatever the block left running in the background (its own process group)
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        output = out_path.read_text(errors="replace")
        if block.lang not in {"python", "console"}:  # bash's "script: line N:" as the doc's file:line
            output = re.sub(rf"{re.escape(str(script))}: line (\d+):",
                            lambda m: f"{block.where.rsplit(':', 1)[0]}:{block.line + int(m[1]) - 1}:", output)
        elif block.lang == "python":  # the traceback's File "block_N.py", line L
            output = re.sub(rf'File "{re.escape(str(script))}", line (\d+)',
                            lambda m: f'File "{block.where.rsplit(":", 1)[0]}", line {block.line + int(m[1])}', output)
        if code_ == -1:
            output += f"\n[timed out after {BLOCK_TIMEOUT:g}s]"
        return code_, output


DOCS_TO_RUN = [p for p in DOCS if runnable(p)]


def test_the_runner_on_a_sample(short_tmp: Path) -> None:
    """Controls for the runner: state carries over, set -e stops a block, errors name the doc's line."""
    md = short_tmp / "sample.md"
    md.write_text("# t\n\n```sh\ncd /\nX=kept\n```\n\n```console\n$ echo \"$X in $PWD\"\nkept in /\n```\n\n"
                  "```sh\ntrue\nnosuch_command_xyz\necho not reached\n```\n\n"
                  "```python\nx = 1\nraise SystemExit(1/0)\n```\n")
    (short_tmp / "s").mkdir()
    shell = Shell(short_tmp / "s")
    results = [shell.run(b) for b in parse(md)[0]]
    assert results[:3] == [(0, ""), (0, "kept in /\n"),
                           (127, f"{md}:15: nosuch_command_xyz: command not found\n")]
    code, output = results[3]
    assert code == 1
    assert f'File "{md}", line 21, in <module>' in output
    assert "ZeroDivisionError" in output


@pytest.mark.parametrize("path", DOCS_TO_RUN, ids=[str(p.relative_to(REPO)) for p in DOCS_TO_RUN])
def test_examples_run(path: Path, short_tmp: Path) -> None:
    if shutil.which("jq") is None and any("jq " in b.code for b in runnable(path)):
        pytest.fail("jq is not installed and the examples use it (Debian: apt-get install jq)")
    shell = Shell(short_tmp)
    shell.start_daemon()
    try:
        started = time.monotonic()
        for block in runnable(path):
            code, output = shell.run(block)
            if code != 0:
                log = shell.log.read_text(errors="replace").splitlines()[-15:]
                raise AssertionError(
                    f"{block.where}: the ```{block.lang} block exited {code}\n"
                    f"--- block ---\n{block.code}--- output ---\n{output[-6000:]}\n"
                    "--- daemon log (last lines) ---\n" + "\n".join(log))
        assert time.monotonic() - started < 60
    finally:
        shell.stop_daemon()
    from tests.devboy_schema import check_root

    root = shell.home / ".local" / "state" / "traced" / "sessions"
    if root.exists():
        check_root(root)  # what the examples wrote is readable by devboy's own types


# --- commands quoted inline -------------------------------------------------------------

INLINE = re.compile(r"`(traced [^`\n]+)`")


def _options(parser: argparse.ArgumentParser) -> tuple[set[str], dict[str, argparse.ArgumentParser]]:
    subs: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            subs.update(action.choices)
    return set(parser._option_string_actions), subs


def inline_problems(text: str, where: str) -> list[str]:
    """Options quoted in `traced …` spans that the named (sub)command does not have."""
    from traced.cli.main import build_parser

    top = build_parser()
    problems = []
    for m in INLINE.finditer(text):
        parser, path = top, ["traced"]
        for raw in m[1].split()[1:]:
            for word in filter(None, re.split(r"[\[\]|]", raw)):
                options, subs = _options(parser)
                if word.startswith("-") and len(word) > 1 and word[1] != " ":
                    name = word.split("=", 1)[0]
                    if re.fullmatch(r"--?[A-Za-z][\w-]*", name) and name not in options:
                        problems.append(f"{where}: `{m[1]}`: {' '.join(path)} has no option {name}")
                elif word in subs:
                    parser = subs[word]
                    path.append(word)
    return problems


def test_inline_commands_name_real_options() -> None:
    """`traced tail [-n N] [-f]`-style mentions in prose: every option named exists on that command."""
    problems = [p for path in DOCS for p in inline_problems(path.read_text(), str(path.relative_to(REPO)))]
    # and the synopses and transcripts in blocks that are not run (```text, bare fences)
    for path in DOCS:
        for block in parse(path)[0]:
            if block.lang in ("", "text"):
                lines = [re.sub(r"^\$ ", "", line) for line in block.code.splitlines()]
                spans = "".join(f"`{line}`" for line in lines if line.startswith("traced "))
                problems += inline_problems(spans, block.where)
    assert problems == []
    # control: the check does see a wrong one
    assert inline_problems("see `traced show ID [--frobnicate]` and `traced ls --since 7d`", "x") == [
        "x: `traced show ID [--frobnicate]`: traced show has no option --frobnicate"]


# --- configuration samples and the defaults table ------------------------------------------

CONFIG_DOC = REPO / "docs" / "configuration.md"


def _config_defaults() -> dict[str, object]:
    import msgspec

    from traced.daemon.config import Config

    return {f.name: f.default if f.default is not msgspec.NODEFAULT else f.default_factory()
            for f in msgspec.structs.fields(Config)}


def test_config_table_matches_the_defaults() -> None:
    """docs/configuration.md names every setting, and each literal default it gives is the code's."""
    import tomllib

    defaults = _config_defaults()
    rows = {}
    for line in CONFIG_DOC.read_text().splitlines():
        m = re.match(r"\|\s*`([a-z_]+)`\s*\|([^|]*)\|", line)
        if m and m[1] in defaults:
            rows[m[1]] = m[2].strip()
    text = CONFIG_DOC.read_text()
    assert [name for name in defaults if f"`{name}`" not in text] == []
    assert len(rows) >= 20
    wrong = {}
    for name, cell in rows.items():
        literal = re.fullmatch(r"`([^`]+)`", cell)
        if literal is None:
            continue  # prose (the socket and root defaults depend on the environment)
        value = tomllib.loads(f"v = {literal[1]}")["v"]
        if value != defaults[name]:
            wrong[name] = (value, defaults[name])
    assert wrong == {}


def test_toml_samples_are_valid_configs(tmp_path: Path) -> None:
    """Every ```toml block in the docs loads with `traced serve`'s own loader (unknown keys are errors)."""
    from traced.daemon import config

    samples = [b for path in DOCS for b in parse(path)[0] if b.lang == "toml" and b.skip is None]
    assert len(samples) >= 3
    for block in samples:
        path = tmp_path / f"{block.line}.toml"
        path.write_text(block.code)
        try:
            config.load(path, env={})
        except Exception as e:
            raise AssertionError(f"{block.where}: {e}\n{block.code}") from e
