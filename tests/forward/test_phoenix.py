"""Opt-in (``-m phoenix``): forward to a real Arize Phoenix server and read the session back.

Phoenix is heavy, so it lives outside the repo venv (see docs/forwarding.md):

    python3 -m venv /tmp/phx && /tmp/phx/bin/pip install arize-phoenix arize-phoenix-client
    PHOENIX_BIN=/tmp/phx/bin/phoenix .venv/bin/pytest -m phoenix tests/test_forward_phoenix.py

``PHOENIX_BIN`` (else ``phoenix`` on PATH) runs the server; the session is read back with
``arize-phoenix-client`` by ``PHOENIX_PYTHON`` (default: the python beside ``PHOENIX_BIN``,
else this interpreter). Skips with the reason when any piece is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon, wait_for

pytestmark = pytest.mark.phoenix

READ_BACK = textwrap.dedent(
    """
    import json, sys, time
    from phoenix.client import Client
    url, project, sid, want = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    client = Client(base_url=url)
    deadline = time.monotonic() + 45
    spans = []
    while time.monotonic() < deadline:  # ingestion is asynchronous
        try:
            spans = client.spans.get_spans(project_identifier=project, limit=100)
        except Exception:
            spans = []
        if len(spans) >= want:
            break
        time.sleep(0.5)  # a poll with a deadline, here: this runs in Phoenix's Python, without tests.conftest
    try:
        session = client.sessions.get(session_id=sid)
    except Exception as e:
        session = {"error": str(e)}
    print(json.dumps({"spans": spans, "session": session}, default=str))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _opted_in(config: pytest.Config) -> bool:
    return "phoenix" in (config.getoption("markexpr", "") or "")


def _reader_python(phoenix_bin: str) -> str | None:
    candidates = [os.environ.get("PHOENIX_PYTHON", ""), str(Path(phoenix_bin).parent / "python"), sys.executable]
    for py in candidates:
        if py and os.path.exists(py) and subprocess.run([py, "-c", "import phoenix.client"],
                                                        capture_output=True, timeout=60).returncode == 0:
            return py
    return None


@pytest.fixture
def phoenix(request: pytest.FixtureRequest, short_tmp: Path) -> Iterator[tuple[str, str]]:
    if not _opted_in(request.config):
        pytest.skip("opt-in: run with -m phoenix")
    server = os.environ.get("PHOENIX_BIN") or shutil.which("phoenix")
    if not server:
        pytest.skip("Arize Phoenix not installed: set PHOENIX_BIN or put `phoenix` on PATH (pip install arize-phoenix)")
    reader = _reader_python(server)
    if reader is None:
        pytest.skip("arize-phoenix-client not importable (pip install arize-phoenix-client)")
    port, grpc = _free_port(), _free_port()
    env = {**os.environ, "PHOENIX_WORKING_DIR": str(short_tmp / "phoenix"), "PHOENIX_HOST": "127.0.0.1",
           "PHOENIX_PORT": str(port), "PHOENIX_GRPC_PORT": str(grpc), "PHOENIX_TELEMETRY_ENABLED": "false"}
    log = open(short_tmp / "phoenix.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen([server, "serve"], env=env, stdout=log, stderr=log, start_new_session=True)
    log.close()
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, (short_tmp / "phoenix.log").read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    try:
        wait_for(healthy, timeout=90, what="phoenix /healthz", every=0.3)
        yield base, reader
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@pytest.mark.timeout(300)  # Phoenix may take 90 s to get healthy, then ingests asynchronously
def _attr(attributes: dict[str, Any], name: str) -> Any:
    """An attribute by its dotted name, whether the client returns it flat or nested."""
    if name in attributes:
        return attributes[name]
    value: Any = attributes
    for part in name.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def test_session_reads_back_from_phoenix(daemon_factory: Any, phoenix: tuple[str, str]) -> None:
    base, reader = phoenix
    project = "traced-test"
    d: Daemon = daemon_factory("--forward", f"{base}/v1/traces?project={project}")
    with d.client() as c, c.session(skill="review", input={"pr": 42}) as s:
        s.user_prompt("review the PR")
        s.llm_call("claude-x", provider="anthropic", input_tokens=120, output_tokens=30, cost_usd=0.002,
                   latency_ms=800, cache_read_tokens=1000, cache_write_tokens=50)
        s.tool_call("Bash", {"cmd": "git diff"}, call_id="t1")
        s.tool_result("Bash", ok=True, result_summary="2 files", call_id="t1")
        s.note("looks fine")
        s.end("success", summary="approved")
        sid = s.id

    res = subprocess.run([reader, "-c", READ_BACK, base, project, sid, "3"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    data: dict[str, Any] = json.loads(res.stdout)
    spans = data["spans"]
    names = sorted(sp["name"] for sp in spans)
    assert names == ["chat claude-x", "execute_tool Bash", "invoke_agent review"]
    trace_hex = hashlib.sha256(sid.encode()).digest()[:16].hex()
    assert {sp["context"]["trace_id"] for sp in spans} == {trace_hex}
    root = next(sp for sp in spans if sp["name"] == "invoke_agent review")
    assert not root.get("parent_id")
    assert root["attributes"]["session.id"] == sid
    assert root["attributes"]["traced.outcome"] == "success"
    assert root["status_code"] == "OK"
    llm = next(sp for sp in spans if sp["name"] == "chat claude-x")
    assert llm["parent_id"] == root["context"]["span_id"]
    assert llm["span_kind"] == "LLM" and llm["attributes"]["gen_ai.usage.input_tokens"] == 1170
    # Phoenix counts prompt tokens from OpenInference's names: the cache is in the prompt total
    assert _attr(llm["attributes"], "llm.token_count.prompt") == 1170
    assert _attr(llm["attributes"], "llm.token_count.prompt_details.cache_read") == 1000
    assert _attr(llm["attributes"], "llm.token_count.prompt_details.cache_write") == 50
    session = data["session"]
    assert session.get("session_id") == sid, session
