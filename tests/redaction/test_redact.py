"""Redaction (DESIGN §2): a table-driven corpus of credentials and look-alikes.

Every credential here is FAKE, generated from a seeded RNG and assembled from pieces,
so no real secret (and no literal a secret scanner would flag) lives in the source.
"""

from __future__ import annotations

import base64
import copy
import json
import random
import string
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from traced.redaction.redactor import (
    ENV_VALUE_MARKER,
    SECRET_ENV_MIN_LEN,
    SECRET_KEY_MARKER,
    SHAPE_RULES,
    Redactor,
    is_secret_key,
    secret_env_values,
)

_RNG = random.Random(20261121)
_ALNUM = string.ascii_letters + string.digits
_UPPER_ALNUM = string.ascii_uppercase + string.digits
_B64URL = _ALNUM + "-_"
_HEX = "0123456789abcdef"


def fake(n: int, alphabet: str = _ALNUM) -> str:
    """n random chars; always holds a digit when the alphabet has one (real keys do)."""
    s = "".join(_RNG.choice(alphabet) for _ in range(n))
    return s[:-1] + "7" if "7" in alphabet else s


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def fake_jwt() -> str:
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64url(json.dumps({"sub": fake(10), "iat": 1732229297}).encode())
    return f"{header}.{claims}.{fake(43, _B64URL)}"


def fake_pem(kind: str, end: bool = True) -> str:
    label = f"{kind} PRIVATE" + " KEY"
    body = "\n".join(fake(64, _ALNUM + "+/") for _ in range(4))
    tail = f"\n-----END {label}-----" if end else ""
    return f"-----BEGIN {label}-----\n{body}{tail}"


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


# Fake credentials, assembled from prefix + random body.
GHP = "gh" + "p_" + fake(36)
GHO = "gh" + "o_" + fake(36)
GHU = "gh" + "u_" + fake(36)
GHS = "gh" + "s_" + fake(36)
GHR = "gh" + "r_" + fake(36)
GH_PAT = "github" + "_pat_" + fake(22) + "_" + fake(59)
GLPAT = "gl" + "pat-" + fake(20, _B64URL)
OPENAI = "sk" + "-" + fake(48)
OPENAI_PROJ = "sk" + "-proj-" + fake(120, _B64URL)
ANTHROPIC = "sk" + "-ant-api03-" + fake(93, _B64URL) + "AA"
SLACK_BOT = "xo" + "xb-" + fake(12, string.digits) + "-" + fake(13, string.digits) + "-" + fake(24)
SLACK_USER = "xo" + "xp-" + fake(12, string.digits) + "-" + fake(12, string.digits) + "-" + fake(32)
SLACK_APP = "xa" + "pp-1-" + fake(11, _UPPER_ALNUM) + "-" + fake(13, string.digits) + "-" + fake(64)
STRIPE_LIVE = "sk" + "_live_" + fake(24)
STRIPE_TEST = "sk" + "_test_" + fake(24)
STRIPE_RK = "rk" + "_live_" + fake(24)
STRIPE_PK = "pk" + "_live_" + fake(24)
GOOGLE = "AI" + "za" + fake(35, _B64URL)
HF = "hf" + "_" + fake(34)
NPM = "npm" + "_" + fake(36)
SLACK_HOOK = (
    "https://hooks.slack.com/services/T" + fake(8, _UPPER_ALNUM) + "/B" + fake(8, _UPPER_ALNUM) + "/" + fake(24)
)
AWS_AKIA = "AK" + "IA" + fake(16, _UPPER_ALNUM)
AWS_ASIA = "AS" + "IA" + fake(16, _UPPER_ALNUM)
JWT = fake_jwt()
PEM_RSA = fake_pem("RSA")
PEM_OPENSSH = fake_pem("OPENSSH")
PEM_CUT = fake_pem("EC", end=False)
OPAQUE = fake(40, _B64URL)
URL_PW = fake(16)
DAEMON_ENV = "dmn" + fake(21)
CLIENT_ENV = "cli" + fake(21)
SHORT_ENV = "pw12345"  # 7 chars: below SECRET_ENV_MIN_LEN, never used

BASE = Redactor([DAEMON_ENV, SHORT_ENV])
REDACTOR = BASE.with_values([CLIENT_ENV])


@dataclass(frozen=True)
class Case:
    """One corpus entry: ``secret`` must vanish behind ``marker``; None = look-alike."""

    id: str
    payload: Any
    secret: str | None = None
    marker: str | None = None


def pos(id: str, payload: Any, secret: str, marker: str) -> Case:
    return Case(id, payload, secret, f"<redacted:{marker}>")


def neg(id: str, payload: Any) -> Case:
    return Case(id, payload)


POSITIVES: list[Case] = [
    pos(
        "github-ghp",
        {"cmd": f"git clone https://github.com/o/r && echo {GHP}"},
        GHP,
        "github-token",
    ),
    pos("github-gho", {"out": f"token: {GHO}\n"}, GHO, "github-token"),
    pos("github-ghu", [f"({GHU})"], GHU, "github-token"),
    pos("github-ghs", {"args": {"t": f"'{GHS}'"}}, GHS, "github-token"),
    pos("github-ghr", {"note": f"refresh={GHR};"}, GHR, "github-token"),
    pos(
        "github-pat-fine-grained",
        {"cmd": f"gh auth login --with-token <<< {GH_PAT}"},
        GH_PAT,
        "github-token",
    ),
    pos(
        "gitlab-glpat",
        {"cmd": f"curl --header 'PRIVATE-TOKEN: {GLPAT}' https://gitlab.com/api/v4/user"},
        GLPAT,
        "gitlab-token",
    ),
    pos("openai-sk", {"message": f"using key {OPENAI} for requests"}, OPENAI, "openai-key"),
    pos("openai-sk-proj", {"stdout": f'{{"key": "{OPENAI_PROJ}"}}'}, OPENAI_PROJ, "openai-key"),
    pos("anthropic-sk-ant", {"cmd": f"claude --api {ANTHROPIC}"}, ANTHROPIC, "anthropic-key"),
    pos("slack-xoxb", {"text": f"bot={SLACK_BOT}"}, SLACK_BOT, "slack-token"),
    pos("slack-xoxp", f"user token {SLACK_USER} expired", SLACK_USER, "slack-token"),
    pos("slack-xapp", {"args": [f"--app-token={SLACK_APP}"]}, SLACK_APP, "slack-token"),
    pos(
        "stripe-sk-live",
        {"cmd": f"stripe --api-key {STRIPE_LIVE} charges list"},
        STRIPE_LIVE,
        "stripe-key",
    ),
    pos("stripe-sk-test", {"out": f"[{STRIPE_TEST}]"}, STRIPE_TEST, "stripe-key"),
    pos("stripe-rk-live", {"out": STRIPE_RK}, STRIPE_RK, "stripe-key"),
    pos("stripe-pk-live", {"html": f'data-key="{STRIPE_PK}"'}, STRIPE_PK, "stripe-key"),
    pos(
        "slack-webhook",
        {"cmd": f"curl -X POST {SLACK_HOOK} -d @msg.json"},
        SLACK_HOOK,
        "slack-webhook",
    ),
    pos("google-api-key", {"url_param": f"?key={GOOGLE}&q=x"}, GOOGLE, "google-api-key"),
    pos("huggingface-token", {"out": f"Token: {HF}"}, HF, "huggingface-token"),
    pos("npm-token", {"npmrc": f"//registry.npmjs.org/:_authToken={NPM}"}, NPM, "npm-token"),
    pos(
        "auth-header-token-scheme",
        {"h": "Authorization: Token 9f8e7d6c5b4a39281706"},
        "9f8e7d6c5b4a39281706",
        "auth-header",
    ),
    pos(
        "bearer-short-in-header",
        {"h": 'headers={"Authorization": "Bearer abcdefgh"}'},
        "abcdefgh",
        "bearer-token",
    ),
    pos("aws-akia", {"out": f"aws_access_key_id = {AWS_AKIA}\n"}, AWS_AKIA, "aws-access-key-id"),
    pos("aws-asia", {"out": f"AccessKeyId: {AWS_ASIA}"}, AWS_ASIA, "aws-access-key-id"),
    pos("jwt-bare", {"result_summary": f"got {JWT} back"}, JWT, "jwt"),
    pos("jwt-in-json-text", {"stdout": json.dumps({"id_tok": JWT})}, JWT, "jwt"),
    pos("pem-rsa", {"content": PEM_RSA}, PEM_RSA, "private-key"),
    pos(
        "pem-openssh-in-text",
        {"out": f"cat id_ed25519\n{PEM_OPENSSH}\n$ "},
        PEM_OPENSSH,
        "private-key",
    ),
    pos("pem-cut-off", {"out": PEM_CUT}, PEM_CUT, "private-key"),
    pos("bearer-header-string", {"h": f"Authorization: Bearer {OPAQUE}"}, OPAQUE, "bearer-token"),
    pos(
        "bearer-in-curl",
        {"cmd": f'curl -H "Authorization: Bearer {OPAQUE}" https://api.x.io/v1'},
        OPAQUE,
        "bearer-token",
    ),
    pos("bearer-lowercase", {"h": f"authorization: bearer {OPAQUE}"}, OPAQUE, "bearer-token"),
    pos("bearer-jwt", [f"Bearer {JWT}"], JWT, "bearer-token"),
    pos(
        "basic-header",
        {"h": "Authorization: Basic " + basic("deploy", "Tr0ub4dor&3")},
        basic("deploy", "Tr0ub4dor&3"),
        "basic-auth",
    ),
    pos(
        "url-password-postgres",
        {"dsn": f"postgres://app:{URL_PW}@db.internal:5432/prod"},
        URL_PW,
        "url-password",
    ),
    pos(
        "url-password-https-token",
        {"cmd": f"git push https://x-access-token:{URL_PW}@github.com/o/r.git"},
        URL_PW,
        "url-password",
    ),
    pos(
        "url-token-as-username",
        {"remote": f"https://{GHP}:x-oauth-basic@github.com/o/r.git"},
        GHP,
        "github-token",
    ),
    pos(
        "url-password-redis-no-user",
        {"url": f"redis://:{URL_PW}@cache:6379/0"},
        URL_PW,
        "url-password",
    ),
    pos("key-api_key", {"api_key": "abc-not-shaped-123"}, "abc-not-shaped-123", "secret-key"),
    pos(
        "key-authorization-nested",
        {"request": {"headers": {"Authorization": "Token opaque-value-1"}}},
        "opaque-value-1",
        "secret-key",
    ),
    pos(
        "key-password-in-list",
        {"users": [{"name": "ann", "password": "correct horse"}]},
        "correct horse",
        "secret-key",
    ),
    pos(
        "key-client_secret-deep",
        {"a": [{"b": {"oauth": {"client_secret": "cs-value-99"}}}]},
        "cs-value-99",
        "secret-key",
    ),
    pos(
        "key-env-GITHUB_TOKEN",
        {"env": {"GITHUB_TOKEN": "plain-value-42", "HOME": "/root"}},
        "plain-value-42",
        "secret-key",
    ),
    pos(
        "key-x-api-key-header",
        {"headers": {"X-Api-Key": "hdr-value-17"}},
        "hdr-value-17",
        "secret-key",
    ),
    pos(
        "key-camelCase-apiKey",
        {"config": {"apiKey": "camel-value-5"}},
        "camel-value-5",
        "secret-key",
    ),
    pos(
        "key-cookie",
        {"headers": {"Cookie": "session=s3ss10n-v4lue"}},
        "s3ss10n-v4lue",
        "secret-key",
    ),
    pos(
        "key-set-cookie",
        {"headers": {"set-cookie": "sid=c00kie-v4lue; HttpOnly"}},
        "c00kie-v4lue",
        "secret-key",
    ),
    pos(
        "key-aws-secret-access-key",
        {"AWS_SECRET_ACCESS_KEY": "aws-secret-value-8"},
        "aws-secret-value-8",
        "secret-key",
    ),
    pos(
        "key-private_key-subtree",
        {"private_key": {"kty": "RSA", "d": "subtree-d-value"}},
        "subtree-d-value",
        "secret-key",
    ),
    pos("key-db_password-number", {"db_password": 98765432}, "98765432", "secret-key"),
    pos("key-token", {"token": "tok-value-3"}, "tok-value-3", "secret-key"),
    pos(
        "key-refresh_token",
        {"oauth": {"access_token": "at-1", "refresh_token": "rt-value-2"}},
        "rt-value-2",
        "secret-key",
    ),
    pos(
        "key-stripe-env-style",
        {"env": {"STRIPE_KEY": "stripe-env-val-1"}},
        "stripe-env-val-1",
        "secret-key",
    ),
    pos("env-value-daemon", {"cmd": f"./deploy --target prod{DAEMON_ENV}x"}, DAEMON_ENV, "env-value"),
    pos("env-value-client", {"out": f"echo: {CLIENT_ENV}"}, CLIENT_ENV, "env-value"),
    pos("env-value-in-list", {"argv": ["tool", "--pass", CLIENT_ENV]}, CLIENT_ENV, "env-value"),
    pos(
        "assignment-export",
        {"cmd": "export DATABASE_PASSWORD=hunter2hunter2 && ./migrate"},
        "hunter2hunter2",
        "secret-assignment",
    ),
    pos(
        "assignment-quoted",
        {"content": 'OPENAI_API_KEY="proj key w1th spaces"\nDEBUG=1\n'},
        "proj key w1th spaces",
        "secret-assignment",
    ),
    pos(
        "assignment-inline-env",
        {"cmd": "NPM_TOKEN=npm0paque42 npm publish"},
        "npm0paque42",
        "secret-assignment",
    ),
]

BASE64_FILE = base64.b64encode(_RNG.randbytes(600)).decode()
BASE64_JSON = base64.b64encode(b'{"name": "traced", "version": "0.1.0"}').decode()
GIT_SHA = fake(40, _HEX)
ULID = "01J" + fake(23, "0123456789ABCDEFGHJKMNPQRSTVWXYZ")

NEGATIVES: list[Case] = [
    neg(
        "usage-counters",
        {
            "usage": {
                "input_tokens": 1234,
                "output_tokens": 567,
                "cache_read_tokens": 89,
                "cache_write_tokens": 0,
                "total_tokens": 1890,
            }
        },
    ),
    neg("max_tokens", {"model": "claude-sonnet-4", "max_tokens": 4096, "temperature": 0.2}),
    neg("tokenizer", {"tokenizer": "cl100k_base", "token_count": 512, "num_tokens": 9}),
    neg("camel-maxTokens", {"maxTokens": 2048, "inputTokens": 10, "promptTokens": 3}),
    neg("key-alone", {"key": "value-of-some-map-entry", "keys": ["a", "b", "c"]}),
    neg("primary_key", {"primary_key": "user_id_column_name"}),
    neg("sort_key", {"sort_key": "created_at#2026-11-21"}),
    neg("partition_key", {"partition_key": "tenant-4711"}),
    neg("cache_key", {"cache_key": "v1:users:list:page=2"}),
    neg("idempotency_key", {"idempotency_key": "8c3f1f9e-7d55-4c41-9a0e-1f6ad2a4b1c2"}),
    neg("foreign_key", {"foreign_key": "orders.customer_id"}),
    neg(
        "public_key",
        {"ssh_public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH3mZy0rKD6Vd9NGW8wAQ8Uq u@h"},
    ),
    neg("sk-learn", {"cmd": "pip install sk-learn sk-1 scikit-learn"}),
    neg("sk-hyphenated-words", {"text": "sk-learn-compatible-estimator-wrappers"}),
    neg("task-prefix", {"branch": "task-1234567890abcdefghijklmnop"}),
    neg("git-sha", {"commit": GIT_SHA, "parent": fake(40, _HEX)}),
    neg("uuid", {"session_id": "3f2b8c1e-9d4a-4f6b-8e2c-7a1d5b9c0e34"}),
    neg("ulid", {"session_id": ULID, "call_id": "toolu_01HXYZ3K9P2QW8E7R6T5Y4U3I2"}),
    neg("base64-file-content", {"path": "logo.png", "encoding": "base64", "content": BASE64_FILE}),
    neg("base64-json-content", {"path": "package.json.b64", "content": BASE64_JSON}),
    neg("bearer-english", {"message": "The bearer of this letter is a trusted friend of ours."}),
    neg("bearer-docs", {"note": "Bearer tokens go in the Authorization header; see RFC 6750."}),
    neg("bearer-date", {"text": "the bearer 2024-05-01 signed it; authorization: pending"}),
    neg(
        "authorization-english",
        {"text": "Authorization header missing; see the Authorization docs."},
    ),
    neg(
        "hf-identifier",
        {"code": "from huggingface_hub import hf_hub_download, hf_api_client_helper"},
    ),
    neg(
        "bearer-placeholder",
        {"cmd": 'curl -H "Authorization: Bearer $GITHUB_TOKEN" https://api.github.com'},
    ),
    neg("basic-english", {"summary": "Basic features cost nothing; basic authentication is off."}),
    neg("url-plain", {"url": "https://github.com/anthropics/claude-code/issues?q=is%3Aopen"}),
    neg("url-port", {"url": "http://localhost:8080/api/v1/items?user=a@b.c"}),
    neg("url-user-only", {"remote": "ssh://git@github.com/org/repo.git"}),
    neg("scp-style-git", {"remote": "git@github.com:org/repo.git"}),
    neg("url-placeholder-password", {"dsn": "postgres://app:${DB_PASSWORD}@db:5432/prod"}),
    neg("url-doc-example", {"doc": "`pass` in `https://user:pass@host:port/path?q#frag`"}),
    neg("assignment-in-code", {"content": '("TOKEN=", "SECRET=", "KEY=", "PASSWORD="),'}),
    neg("short-env-value", {"cmd": f"echo {SHORT_ENV} done"}),
    neg("xoxo-word", {"text": "xoxo-hugs-and-kisses-forever"}),
    neg("eyJ-single-segment", {"header": "eyJhbGciOiJIUzI1NiJ9 only"}),
    neg("asia-uppercase", {"headline": "ASIAN MARKETS ROSE TODAY AKIA IS A NAME"}),
    neg("pwd-key", {"pwd": "/home/user/project", "cwd": "/home/user/project"}),
    neg("secret-key-null-or-flag", {"api_key": None, "has_password": True, "requires_auth": False}),
    neg("tokenizer-special-tokens", {"eos_token": "</s>", "pad_token": "<pad>", "bos_token": "<s>"}),
    neg("pagination-next-token", {"next_token": "eyJvZmZzZXQiOjEwMH0", "page_token": "CAoQAA"}),
    neg("password-length-setting", {"password_min_length": 12, "password_policy": "strong"}),
    neg("sort_keys-in-code", {"content": "json.dumps(obj, sort_keys=True, indent=2)\n"}),
    neg("max_tokens-in-code", {"content": "client.messages.create(max_tokens=4096, model=m)"}),
    neg("sort-key-assignment", {"cmd": "SORT_KEY=created_at MONKEY=banana12 ./run"}),
    neg("english-secret", {"text": "The secret to good code is tests; keep your token budget low."}),
    neg("docker-digest", {"image": "python@sha256:" + fake(64, _HEX)}),
    neg(
        "public-pem",
        {"content": "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----"},
    ),
    neg("bare-prefixes", {"doc": "ghp_ and glpat- and sk_live_123 and xoxb- are prefixes"}),
    neg(
        "model-names",
        {"provider": "openai", "model": "gpt-4o-mini-2024-07-18", "finish_reason": "end_turn"},
    ),
]

CORPUS = POSITIVES + NEGATIVES


def _dump(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


@pytest.mark.parametrize("case", POSITIVES, ids=lambda c: c.id)
def test_credential_is_redacted(case: Case) -> None:
    assert case.secret is not None and case.marker is not None
    out, n = REDACTOR.redact(case.payload)
    assert n >= 1
    assert case.secret not in _dump(out)
    assert case.marker in _dump(out)


@pytest.mark.parametrize("case", NEGATIVES, ids=lambda c: c.id)
def test_look_alike_is_kept(case: Case) -> None:
    out, n = REDACTOR.redact(case.payload)
    assert (out is case.payload, n) == (True, 0), _dump(out)


def test_corpus_precision_recall(capsys: pytest.CaptureFixture[str]) -> None:
    tp = fp = fn = 0
    for case in CORPUS:
        out, n = REDACTOR.redact(case.payload)
        hit = n > 0 and (case.secret is None or case.secret not in _dump(out))
        if case.secret is not None:
            tp += hit
            fn += not hit
        else:
            fp += n > 0
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    with capsys.disabled():
        print(
            f"\nredaction corpus: precision={precision:.1%} recall={recall:.1%} "
            f"({len(CORPUS)} cases: {len(POSITIVES)} credentials, {len(NEGATIVES)} look-alikes)"
        )
    assert len(POSITIVES) >= 35 and len(NEGATIVES) >= 35
    assert (precision, recall) == (1.0, 1.0)


def test_every_rule_has_a_credential_in_the_corpus() -> None:
    names = [rule.name for rule in SHAPE_RULES]
    assert len(names) == len(set(names))
    covered = {case.marker for case in POSITIVES}
    wanted = {f"<redacted:{n}>" for n in [*names, "secret-key", "env-value"]}
    assert wanted <= covered, wanted - covered


# --- markers, counts, identity ----------------------------------------------------


def test_marker_replaces_only_the_segment() -> None:
    text = f"export GH={GHP} # and AWS {AWS_AKIA}."
    out, n = REDACTOR.redact_text(text)
    assert out == "export GH=<redacted:github-token> # and AWS <redacted:aws-access-key-id>."
    assert n == 2


def test_bearer_keeps_scheme_and_url_keeps_user_and_host() -> None:
    out, n = REDACTOR.redact_text(f"Authorization: Bearer {OPAQUE}")
    assert (out, n) == ("Authorization: Bearer <redacted:bearer-token>", 1)
    out, n = REDACTOR.redact_text(f"postgres://app:{URL_PW}@db:5432/prod")
    assert (out, n) == ("postgres://app:<redacted:url-password>@db:5432/prod", 1)


def test_secret_key_marker_replaces_whole_subtree() -> None:
    payload = {"credentials": {"user": "u", "pass": ["a", {"b": GHP}]}, "ok": 1}
    out, n = REDACTOR.redact(payload)
    assert out == {"credentials": SECRET_KEY_MARKER, "ok": 1}
    assert n == 1


def test_counts_every_segment_and_key() -> None:
    payload = {
        "api_key": "x" * 10,  # 1 key
        "cmd": f"{GHP} {GHO} {AWS_AKIA}",  # 3 shapes
        "list": [DAEMON_ENV, f"{CLIENT_ENV}/{CLIENT_ENV}"],  # 3 env values
        "usage": {"input_tokens": 5},  # 0
    }
    out, n = REDACTOR.redact(payload)
    assert n == 7
    assert out["list"] == [ENV_VALUE_MARKER, f"{ENV_VALUE_MARKER}/{ENV_VALUE_MARKER}"]
    assert out["usage"] is payload["usage"]


def test_input_is_not_mutated() -> None:
    payload = {"a": [{"token": "t-1"}, f"x {GHP}"], "b": {"c": JWT, "d": [1, 2.5, None]}}
    before = copy.deepcopy(payload)
    out, n = REDACTOR.redact(payload)
    assert payload == before
    assert out != payload and n == 3


def test_unchanged_payload_is_the_same_object() -> None:
    payload = {"tool": "Bash", "args": {"command": "ls -la"}, "items": [[1, "two"], {"k": None}]}
    out, n = REDACTOR.redact(payload)
    assert out is payload and n == 0
    for scalar in ("plain text that is long enough", 42, 1.5, None, True):
        assert REDACTOR.redact(scalar) == (scalar, 0)
        assert REDACTOR.redact(scalar)[0] is scalar


def test_only_changed_containers_are_copied() -> None:
    clean = {"deep": {"x": [1, 2, 3]}}
    payload = {"clean": clean, "dirty": {"nested": [f"Bearer {OPAQUE}", "fine"]}}
    out, n = REDACTOR.redact(payload)
    assert n == 1
    assert out is not payload and out["clean"] is clean
    assert out["dirty"]["nested"][1] == "fine"


def test_redaction_is_idempotent() -> None:
    payload = {"cmd": f"X_TOKEN={OPAQUE} curl https://u:{URL_PW}@h/ -H 'Bearer {OPAQUE}'"}
    once, n = REDACTOR.redact(payload)
    assert n == 3
    twice, m = REDACTOR.redact(once)
    assert (twice is once, m) == (True, 0)


def test_rejected_match_does_not_hide_a_later_credential() -> None:
    # 'PRIMARY_KEY=' is no secret assignment, but the token right after it is.
    out, n = REDACTOR.redact_text(f"PRIMARY_KEY={GHP}")
    assert (out, n) == ("PRIMARY_KEY=<redacted:github-token>", 1)


def test_disabled_redactor_is_a_no_op() -> None:
    off = Redactor([DAEMON_ENV], enabled=False)
    payload = {"api_key": GHP, "cmd": DAEMON_ENV}
    assert off.redact(payload) == (payload, 0)
    assert off.redact(payload)[0] is payload
    assert off.redact_text(GHP) == (GHP, 0)


# --- env values -------------------------------------------------------------------


def test_with_values_adds_client_values_without_touching_base() -> None:
    text = f"a {CLIENT_ENV} b {DAEMON_ENV}"
    assert BASE.redact_text(text) == (f"a {CLIENT_ENV} b {ENV_VALUE_MARKER}", 1)
    assert REDACTOR.redact_text(text) == (f"a {ENV_VALUE_MARKER} b {ENV_VALUE_MARKER}", 2)
    # Nothing new: the very same Redactor comes back; short values are ignored.
    assert BASE.with_values([DAEMON_ENV, "short"]) is BASE
    assert BASE.with_values([]) is BASE


def test_env_values_longest_first() -> None:
    r = Redactor(["abcdefgh", "abcdefgh-longer"])
    assert r.redact_text("x abcdefgh-longer y abcdefgh") == (
        f"x {ENV_VALUE_MARKER} y {ENV_VALUE_MARKER}",
        2,
    )


def test_env_value_with_regex_metacharacters() -> None:
    value = "p@ss(w0rd)+[x]*"
    out, n = Redactor([value]).redact_text(f"login {value} ok")
    assert (out, n) == (f"login {ENV_VALUE_MARKER} ok", 1)


def test_secret_env_values() -> None:
    env = {
        "GITHUB_TOKEN": "gt-value-123456",
        "OPENAI_API_KEY": "oa-value-123456",
        "DUPLICATE_SECRET": "gt-value-123456",
        "DB_PASSWORD": "short",  # below the minimum length
        "SSL_KEY": "/etc/ssl/private/key.pem",  # a path, not a secret
        "HOME": "/home/user",
        "PATH": "/usr/bin:/bin",
        "MAX_TOKENS": "4096000000",
        "PRIMARY_KEY": "id-column-name",
    }
    assert secret_env_values(env) == ["gt-value-123456", "oa-value-123456"]
    assert SECRET_ENV_MIN_LEN == 8


# --- key names --------------------------------------------------------------------

SECRET_NAMES = [
    "GITHUB_TOKEN", "OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY", "STRIPE_KEY", "DB_PASSWORD",
    "GPG_PASSPHRASE", "NPM_AUTH", "PGPASSWORD", "authorization", "Authorization", "cookie",
    "set-cookie", "password", "passwd", "secret", "token", "api_key", "apikey", "apiKey",
    "access_token", "accessToken", "refresh_token", "client_secret", "clientSecret",
    "private_key", "x-api-key", "X-Auth-Token", "x-amz-security-token", "API_KEY_2",
    "GITLAB_PAT", "api_keys", "webhook_secret", "credentials",
]  # fmt: skip
NOT_SECRET_NAMES = [
    "input_tokens", "output_tokens", "max_tokens", "cache_read_tokens", "cache_write_tokens",
    "total_tokens", "tokens", "tokenizer", "token_count", "num_tokens", "maxTokens", "key",
    "keys", "primary_key", "sort_key", "partition_key", "cache_key", "idempotency_key",
    "foreign_key", "public_key", "sort_keys", "eos_token", "next_token", "NextToken",
    "pwd", "password_min_length", "password_policy", "keyboard", "monkey", "access_key_id",
    "session_id", "author", "SSH_AUTH_SOCK", "requires_auth", "",
]  # fmt: skip


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_names(name: str) -> None:
    assert is_secret_key(name)


@pytest.mark.parametrize("name", NOT_SECRET_NAMES)
def test_not_secret_names(name: str) -> None:
    assert not is_secret_key(name)


# --- properties -------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["api_key", "input_tokens", "cmd", "Authorization", "k"]) | st.text(),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)
_tricky = st.sampled_from(
    [GHP, JWT, OPAQUE, DAEMON_ENV, CLIENT_ENV, "Bearer ", "Authorization: ", "://u:", "@h",
     "X_TOKEN=", "-----BEGIN RSA PRIVATE" + " KEY-----", "sk-", "basic ", "<redacted:"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(_json, st.lists(_tricky | st.text(max_size=8), max_size=6))
def test_properties_no_mutation_idempotent(payload: Any, pieces: list[str]) -> None:
    payload = {"data": payload, "text": "".join(pieces)}
    before = copy.deepcopy(payload)
    once, n = REDACTOR.redact(payload)
    assert payload == before
    assert (once is payload) == (n == 0)
    twice, m = REDACTOR.redact(once)
    assert m == 0 and twice is once
