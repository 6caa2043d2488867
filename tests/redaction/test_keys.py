"""Object keys get the string rules (DESIGN §2): a credential used as a key is redacted too.

Real payloads carry secrets in keys: maps keyed by git remote URLs with credentials, header
lines parsed into keys, caches and per-key counters keyed by tokens, env dumps turned inside out
(Lore-Hex/quill-router#554, microsoft/agent-governance-toolkit#3504, bmad-code-org/bmad-loop#21,
MCPJam/inspector#4469, labsai/EDDI#774). Every credential here is FAKE, assembled from pieces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon, read_trace
from traced.redaction.redactor import ENV_VALUE_MARKER, SECRET_KEY_MARKER, Redactor

GHP = "gh" + "p_" + "0123456789abcdefghijABCDEFGHIJ012345"
GHO = "gh" + "o_" + "9876543210ZYXWVUTSRQzyxwvutsrq987654"
AKIA = "AK" + "IA" + "IOSFODNN7EXAMPL2"
URL = "https://user:" + "hunter2secret" + "@example.com/repo.git"
BEARER = "Authorization: Bearer " + "abcdEFGH1234ijklMNOP5678"
CLIENT_ENV = "cli" + "Zq81mVx0pL3rT6wN2"
DAEMON_ENV = "dmn" + "Hk29sPq7Lw4eRt0Yb"

GH = "<redacted:github-token>"
R = Redactor([DAEMON_ENV])
CLIENT = R.with_values([CLIENT_ENV])


@pytest.mark.parametrize(
    ("key", "redacted"),
    [
        (GHP, GH),
        (AKIA, "<redacted:aws-access-key-id>"),
        (URL, "https://user:<redacted:url-password>@example.com/repo.git"),
        (BEARER, "Authorization: Bearer <redacted:bearer-token>"),
        (f"cache {DAEMON_ENV}", f"cache {ENV_VALUE_MARKER}"),
    ],
    ids=["github-token", "aws-key-id", "url-password", "bearer-header-line", "daemon-env-value"],
)
def test_a_key_is_redacted_as_its_text_is(key: str, redacted: str) -> None:
    assert R.redact_text(key) == (redacted, 1)
    assert R.redact({key: "cloned", "n": 2}) == ({redacted: "cloned", "n": 2}, 1)


def test_a_client_env_value_as_a_key() -> None:
    payload = {f"x {CLIENT_ENV}": 1, "cmd": "ls"}
    assert CLIENT.redact(payload) == ({f"x {ENV_VALUE_MARKER}": 1, "cmd": "ls"}, 1)
    assert R.redact(payload) == (payload, 0)  # the daemon alone does not know the client's value


def test_keys_at_any_depth_and_in_lists() -> None:
    payload = {"remotes": [{"name": "origin", "urls": {URL: {"fetch": True}}}], "tally": {GHP: 3}}
    out, n = R.redact(payload)
    assert out == {
        "remotes": [{"name": "origin", "urls": {"https://user:<redacted:url-password>@example.com/repo.git":
                                                {"fetch": True}}}],
        "tally": {GH: 3},
    }  # fmt: skip
    assert n == 2
    assert payload["tally"] == {GHP: 3}  # not mutated
    assert R.redact([[{GHP: 1}]]) == ([[{GH: 1}]], 1)


def test_keys_and_values_count_together() -> None:
    out, n = R.redact({GHP: f"also {GHO}", URL: AKIA, "api_key": "abcdef123456"})
    assert out == {
        GH: f"also {GH}",
        "https://user:<redacted:url-password>@example.com/repo.git": "<redacted:aws-access-key-id>",
        "api_key": SECRET_KEY_MARKER,
    }
    assert n == 5


def test_keys_that_become_equal_are_all_kept_in_order() -> None:
    payload = {GHP: "a", "cmd": "x", GHO: "b", "gh" + "u_" + "0" * 35 + "1": "c"}
    out, n = R.redact(payload)
    assert list(out.items()) == [(GH, "a"), ("cmd", "x"), (f"{GH}<2>", "b"), (f"{GH}<3>", "c")]
    assert n == 3


def test_an_unchanged_key_keeps_its_name_and_a_redacted_one_takes_the_next_free() -> None:
    payload = {GHP: "a", GH: "b", f"{GH}<2>": "c", GHO: "d"}
    out, n = R.redact(payload)
    assert list(out.items()) == [(f"{GH}<3>", "a"), (GH, "b"), (f"{GH}<2>", "c"), (f"{GH}<4>", "d")]
    assert n == 2
    assert R.redact(out) == (out, 0)  # idempotent: markers and suffixes name no secret


def test_keys_under_a_container_name_are_redacted_too() -> None:
    out, n = R.redact({"cookies": {GHP: "sid-value", "n": 2}, "secrets": [{AKIA: "v"}]})
    assert out == {"cookies": {GH: SECRET_KEY_MARKER, "n": 2},
                   "secrets": [{"<redacted:aws-access-key-id>": SECRET_KEY_MARKER}]}  # fmt: skip
    assert n == 4


def test_a_token_key_keeps_its_value() -> None:
    # The marker is no secret name: the value beside a token key is data, not the credential.
    assert R.redact({GHP: {"user": "alice"}}) == ({GH: {"user": "alice"}}, 1)
    assert R.redact({GH: "plain value"}) == ({GH: "plain value"}, 0)


@pytest.mark.parametrize("key", ["api_key", "password", "Authorization", "X-Api-Key", "github_token"])
def test_a_secret_named_key_keeps_its_name(key: str) -> None:
    assert R.redact({key: "s3cr3t-value-x1", GHP: 1}) == ({key: SECRET_KEY_MARKER, GH: 1}, 2)


CLEAN_KEYS = ["tool", "args", "cmd", "max_tokens", "file_path", "usage", "input_tokens", "output_tokens",
              "cache_read_input_tokens", "session_id", "tool_use_id", "hook_event_name", "author"]  # fmt: skip


def test_common_keys_are_unchanged_and_no_suspects() -> None:
    payload: dict[str, Any] = dict.fromkeys(CLEAN_KEYS, 1)
    payload["args"] = {"file_path": "/tmp/x.py", "max_tokens": 1024}
    payload["usage"] = {"input_tokens": 10, "output_tokens": 20}
    assert R.redact(payload) == (payload, 0)
    assert R.redact(payload)[0] is payload
    tally = {**payload, "tally": {GHP: 1}}
    batch = [payload, {"tool": "Bash", "args": {"cmd": "ls"}}, tally]
    assert R.redact_all(batch, [200, 200, 250]) == [(payload, 0), (batch[1], 0), ({**payload, "tally": {GH: 1}}, 1)]
    # the prefilter drops the trigger hits in these keys ('token', '_pat' in 'file_path'), not a token key
    assert R._json_suspects(batch) == {2}


def test_redact_all_finds_secret_keys_both_ways() -> None:
    clean = {"tool": "Bash", "usage": {"input_tokens": 3}}
    batch = [clean, {"tally": {GHP: 1}}, clean, {f"x {CLIENT_ENV}": 1}, [{URL: 1}]]
    want = [(clean, 0), ({"tally": {GH: 1}}, 1), (clean, 0), ({f"x {ENV_VALUE_MARKER}": 1}, 1),
            ([{"https://user:<redacted:url-password>@example.com/repo.git": 1}], 1)]  # fmt: skip
    assert CLIENT.redact_all(batch, [100] * len(batch)) == want  # JSON prefilter
    assert CLIENT.redact_all(batch, [10**6] * len(batch)) == want  # walk
    assert CLIENT.redact_all(batch) == want


def test_more_unique_keys_than_the_cache_holds() -> None:
    # 3,000 path keys: the per-value-set key cache is forgotten mid-walk, twice; nothing changes
    paths = {f"/src/pkg{i}/module_{i}.py": i for i in range(3000)}
    payload = {"files": {**paths, GHP: -1, "z": 0}, "last": {GHO: 1}}
    out, n = R.redact(payload)
    assert out == {"files": {**paths, GH: -1, "z": 0}, "last": {GH: 1}}
    assert n == 2
    assert R.redact_all([payload, {"tool": "x"}], [10**6, 20]) == [(out, 2), ({"tool": "x"}, 0)]


def test_a_token_key_never_reaches_disk(daemon: Daemon) -> None:
    # A git-remote map and a per-token tally, sent acked and as a burst of un-acked emits (one read:
    # redact_all, with clean events around): every key is redacted before trace.jsonl is written.
    with daemon.client() as c, c.session(skill="keys") as s:
        s.tool_call("Bash", {"cmd": "git remote -v", "remotes": {URL: "origin"}})
        for i in range(20):
            s.note(f"n{i}", ack=False)
            s.tool_call("Read", {"file_path": f"/tmp/f{i}.py", "usage": {"input_tokens": i}}, ack=False)
        s.tool_call("Bash", {"tally": {GHP: 3, GHO: 1}}, ack=False)
        s.end()
    session = Path(s.dir)
    records = read_trace(session / "trace.jsonl")
    calls = [r["payload"]["args"] for r in records if r["phase"] == "tool_call"]
    assert calls[0] == {"cmd": "git remote -v",
                        "remotes": {"https://user:<redacted:url-password>@example.com/repo.git": "origin"}}
    assert calls[1] == {"file_path": "/tmp/f0.py", "usage": {"input_tokens": 0}}
    assert calls[-1] == {"tally": {GH: 3, f"{GH}<2>": 1}}
    assert len(calls) == 22
    for f in session.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert GHP.encode() not in data and GHO.encode() not in data and b"hunter2secret" not in data, f
