"""The redaction corpus: real credential formats and real near-misses, as data.

Every case is (name, payload, expected output, secrets). A CREDENTIAL case lists the
secret substrings that must be gone; a NEAR-MISS case expects its payload back unchanged.
The formats come from the gitleaks rule set (gitleaks/gitleaks, config/gitleaks.toml), the
detect-secrets plugins (Yelp/detect-secrets) and the issue #14 review (private corpus misses
and public bug-tracker reports); ``source`` says which.

Every credential is FAKE: random characters of the right alphabet and length from a seeded
RNG, assembled from pieces, so no real secret (and no literal a secret scanner flags) lives
in the source.
"""

from __future__ import annotations

import base64
import json
import random
import string
from dataclasses import dataclass, field
from typing import Any

from traced.redaction.redactor import Redactor

_RNG = random.Random(20261130)
ALNUM = string.ascii_letters + string.digits
UPPER_ALNUM = string.ascii_uppercase + string.digits
LOWER_ALNUM = string.ascii_lowercase + string.digits
B64URL = ALNUM + "-_"
B64 = ALNUM + "+/"
HEX = "0123456789abcdef"


def fake(n: int, alphabet: str = ALNUM) -> str:
    """n random chars; always holds a digit when the alphabet has one (real keys do)."""
    s = "".join(_RNG.choice(alphabet) for _ in range(n))
    return s[:-1] + "7" if "7" in alphabet else s


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def r(name: str) -> str:
    return f"<redacted:{name}>"


SK = r("secret-key")
ASSIGN = r("secret-assignment")
URLPW = r("url-password")
ENV = r("env-value")


@dataclass(frozen=True)
class Case:
    name: str
    payload: Any
    expected: Any
    secrets: tuple[str, ...] = ()
    source: str = ""
    """Where the format comes from: a gitleaks rule id, a detect-secrets plugin, a tracker."""
    miss: str = field(default="", compare=False)
    """Non-empty: a credential deliberately left unredacted, and why (it counts against recall)."""

    @property
    def is_credential(self) -> bool:
        return bool(self.secrets)


CASES: list[Case] = []


def cred(name: str, payload: Any, expected: Any, *secrets: str, source: str = "", miss: str = "") -> None:
    assert secrets, name
    CASES.append(Case(name, payload, expected, secrets, source, miss))


def keep(name: str, payload: Any, source: str = "") -> None:
    CASES.append(Case(name, payload, payload, (), source))


# --- fake credentials of the right shape ------------------------------------------------

GHP = "gh" + "p_" + fake(36)
GHO = "gh" + "o_" + fake(36)
GHU = "gh" + "u_" + fake(36)
GHS = "gh" + "s_" + fake(36)
GHR = "gh" + "r_" + fake(36)
GH_PAT = "github" + "_pat_" + fake(22) + "_" + fake(59)
GLPAT = "gl" + "pat-" + fake(20, B64URL)
GLDT = "gl" + "dt-" + fake(20, ALNUM)
GLRT = "gl" + "rt-" + fake(20, ALNUM)
OPENAI_LEGACY = "sk" + "-" + fake(20) + "T3Blbk" + "FJ" + fake(20)
OPENAI_PROJ = "sk" + "-proj-" + fake(74, B64URL) + "T3Blbk" + "FJ" + fake(74, B64URL)
OPENAI_SVC = "sk" + "-svcacct-" + fake(58, B64URL) + "T3Blbk" + "FJ" + fake(58, B64URL)
ANTHROPIC = "sk" + "-ant-api03-" + fake(93, B64URL) + "AA"
ANTHROPIC_ADMIN = "sk" + "-ant-admin01-" + fake(93, B64URL) + "AA"
SLACK_BOT = "xo" + "xb-" + fake(12, string.digits) + "-" + fake(13, string.digits) + "-" + fake(24)
SLACK_USER = "xo" + "xp-" + "-".join(fake(12, string.digits) for _ in range(3)) + "-" + fake(32, LOWER_ALNUM)
SLACK_APP = "xa" + "pp-1-" + fake(11, UPPER_ALNUM) + "-" + fake(13, string.digits) + "-" + fake(64, LOWER_ALNUM)
SLACK_HOOK_PATH = "T" + fake(8, UPPER_ALNUM) + "/B" + fake(8, UPPER_ALNUM) + "/" + fake(24)
STRIPE_LIVE = "sk" + "_live_" + fake(24)
STRIPE_TEST = "sk" + "_test_" + fake(24)
STRIPE_RK = "rk" + "_live_" + fake(24)
STRIPE_PK = "pk" + "_live_" + fake(24)
STRIPE_WHSEC = "wh" + "sec_" + fake(32)
GOOGLE = "AI" + "za" + fake(35, B64URL)
GOCSPX = "GOC" + "SPX-" + fake(28, B64URL)
HF = "hf" + "_" + fake(34, string.ascii_letters)
NPM = "npm" + "_" + fake(36)
PYPI = "pypi" + "-AgEIcHlwaS5vcmc" + fake(70, B64URL)
AWS_AKIA = "AK" + "IA" + fake(16, UPPER_ALNUM)
AWS_ASIA = "AS" + "IA" + fake(16, UPPER_ALNUM)
AWS_SECRET = fake(40, B64)
AWS_SESSION = "IQoJb3JpZ2luX2Vj" + fake(300, B64)
SENDGRID = "SG" + "." + fake(22, B64URL) + "." + fake(43, B64URL)
TWILIO_SK = "S" + "K" + fake(32, HEX)
TWILIO_AC = "A" + "C" + fake(32, HEX)
TWILIO_AUTH = fake(32, HEX)
MAILGUN = "key" + "-" + fake(32, HEX)
HEROKU_V2 = "HR" + "KU-AA" + fake(58, B64URL)
UUID = f"{fake(8, HEX)}-{fake(4, HEX)}-4{fake(3, HEX)}-a{fake(3, HEX)}-{fake(12, HEX)}"
DO_PAT = "dop" + "_v1_" + fake(64, HEX)
SHOPIFY = "shp" + "at_" + fake(32, HEX)
NEWRELIC = "NR" + "AK-" + fake(27, UPPER_ALNUM)
NR_LICENSE = fake(36, HEX) + "NRAL"
DATADOG = fake(32, HEX)
DATADOG_APP = fake(40, HEX)
DISCORD_BOT = "MT" + fake(24, ALNUM) + "." + fake(6, B64URL) + "." + fake(38, B64URL)
DISCORD_HOOK_ID = fake(19, string.digits)
DISCORD_HOOK_TOKEN = fake(68, B64URL)
TELEGRAM_ID = "7" + fake(9, string.digits)
TELEGRAM_SECRET = "AA" + fake(33, B64URL)
AZURE_ACCOUNT_KEY = fake(86, B64) + "=="
AZURE_SAS_SIG = fake(43, ALNUM) + "%3D"
AZURE_AD = fake(3, ALNUM) + "8Q" + "~" + fake(34, ALNUM + "_~.-")
VAULT = "hv" + "s." + fake(95, B64URL)
AGE = "AGE-SECRET" + "-KEY-1" + fake(58, "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L")
AGE_PUBLIC = "age1" + fake(58, LOWER_ALNUM)
OPAQUE = fake(40, B64URL)
PASSWORD = "P" + fake(13, ALNUM + "!#%^*")
PASSWORD2 = fake(12)
DAEMON_ENV = "dmn" + fake(21)
CLIENT_ENV = "cli" + fake(21)


def fake_jwt() -> str:
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64url(json.dumps({"sub": fake(10), "iat": 1732229297}).encode())
    return f"{header}.{claims}.{fake(43, B64URL)}"


def fake_pem(kind: str, end: bool = True, sep: str = "\n") -> str:
    label = f"{kind}PRIVATE" + " KEY"
    body = sep.join(fake(64, B64) for _ in range(5))
    tail = f"{sep}-----END {label}-----" if end else ""
    return f"-----BEGIN {label}-----{sep}{body}{tail}"


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


JWT = fake_jwt()
PEM_RSA = fake_pem("RSA ")
PEM_OPENSSH = fake_pem("OPENSSH ")
PEM_PKCS8_ESCAPED = fake_pem("", sep="\\n")
PEM_EC_CUT = fake_pem("EC ", end=False)
PEM_PGP = (
    "-----BEGIN PGP PRIVATE"
    + " KEY BLOCK-----\n\n"
    + "\n".join(fake(64, B64) for _ in range(4))
    + ("\n-----END PGP PRIVATE KEY BLOCK-----")
)
BASIC = basic("deploy", PASSWORD2)

REDACTOR = Redactor([DAEMON_ENV]).with_values([CLIENT_ENV])

# =====================================================================================
# Credentials with a shape of their own (gitleaks rule ids)
# =====================================================================================

cred(
    "github-pat-in-command",
    {"tool": "Bash", "args": {"command": f"git clone https://github.com/o/r && echo {GHP}"}},
    {"tool": "Bash", "args": {"command": "git clone https://github.com/o/r && echo " + r("github-token")}},
    GHP,
    source="gitleaks github-pat",
)
cred(
    "github-oauth-in-output",
    {"stdout": f"Logged in; token: {GHO}\n"},
    {"stdout": f"Logged in; token: {r('github-token')}\n"},
    GHO,
    source="gitleaks github-oauth",
)
cred("github-app-user-token", [f"({GHU})"], [f"({r('github-token')})"], GHU, source="gitleaks github-app-token")
cred(
    "github-app-install-token",
    {"args": {"t": f"'{GHS}'"}},
    {"args": {"t": f"'{r('github-token')}'"}},
    GHS,
    source="gitleaks github-app-token",
)
cred(
    "github-refresh-token",
    {"note": f"refresh={GHR};"},
    {"note": f"refresh={r('github-token')};"},
    GHR,
    source="gitleaks github-refresh-token",
)
cred(
    "github-fine-grained-pat",
    {"command": f"gh auth login --with-token <<< {GH_PAT}"},
    {"command": f"gh auth login --with-token <<< {r('github-token')}"},
    GH_PAT,
    source="gitleaks github-fine-grained-pat",
)
cred(
    "github-token-authorization-header",
    {"command": f'curl -H "Authorization: token {GHP}" https://api.github.com/user'},
    {"command": f'curl -H "Authorization: token {r("github-token")}" https://api.github.com/user'},
    GHP,
    source="GitHub REST docs",
)
cred(
    "gitlab-pat-private-token-header",
    {"command": f"curl --header 'PRIVATE-TOKEN: {GLPAT}' https://gitlab.com/api/v4/user"},
    {"command": f"curl --header 'PRIVATE-TOKEN: {r('gitlab-token')}' https://gitlab.com/api/v4/user"},
    GLPAT,
    source="gitleaks gitlab-pat",
)
cred(
    "gitlab-deploy-token-in-remote",
    {"stdout": f"origin\thttps://gitlab+deploy-token-7:{GLDT}@gitlab.com/g/p.git (fetch)"},
    {"stdout": f"origin\thttps://gitlab+deploy-token-7:{r('gitlab-token')}@gitlab.com/g/p.git (fetch)"},
    GLDT,
    source="gitleaks gitlab-deploy-token",
)
cred(
    "gitlab-runner-token-in-toml",
    {"content": f'[[runners]]\n  url = "https://gitlab.com"\n  token = "{GLRT}"\n'},
    {"content": f'[[runners]]\n  url = "https://gitlab.com"\n  token = "{r("gitlab-token")}"\n'},
    GLRT,
    source="gitleaks gitlab-runner-authentication-token",
)
cred(
    "openai-legacy-key",
    {"message": f"using key {OPENAI_LEGACY} for requests"},
    {"message": f"using key {r('openai-key')} for requests"},
    OPENAI_LEGACY,
    source="gitleaks openai-api-key",
)
cred(
    "openai-project-key-in-json-text",
    {"stdout": json.dumps({"key": OPENAI_PROJ})},
    {"stdout": json.dumps({"key": r("openai-key")})},
    OPENAI_PROJ,
    source="gitleaks openai-api-key",
)
cred(
    "openai-service-account-key",
    {"content": f"OPENAI_API_KEY={OPENAI_SVC}\n"},
    {"content": f"OPENAI_API_KEY={r('openai-key')}\n"},
    OPENAI_SVC,
    source="gitleaks openai-api-key",
)
cred(
    "openai-export-in-command",
    {"command": f"export OPENAI_API_KEY={OPENAI_PROJ} && python run.py"},
    {"command": f"export OPENAI_API_KEY={r('openai-key')} && python run.py"},
    OPENAI_PROJ,
    source="issue #14: export OPENAI_API_KEY=sk-…",
)
cred(
    "anthropic-api-key",
    {"command": f"claude --api {ANTHROPIC}"},
    {"command": f"claude --api {r('anthropic-key')}"},
    ANTHROPIC,
    source="gitleaks anthropic-api-key",
)
cred(
    "anthropic-admin-key",
    {"env": {"ADMIN": ANTHROPIC_ADMIN}},
    {"env": {"ADMIN": r("anthropic-key")}},
    ANTHROPIC_ADMIN,
    source="gitleaks anthropic-admin-api-key",
)
cred(
    "slack-bot-token",
    {"text": f"bot={SLACK_BOT}"},
    {"text": f"bot={r('slack-token')}"},
    SLACK_BOT,
    source="gitleaks slack-bot-token",
)
cred(
    "slack-user-token",
    f"user token {SLACK_USER} expired",
    f"user token {r('slack-token')} expired",
    SLACK_USER,
    source="gitleaks slack-user-token",
)
cred(
    "slack-app-token",
    {"args": [f"--app-token={SLACK_APP}"]},
    {"args": [f"--app-token={r('slack-token')}"]},
    SLACK_APP,
    source="gitleaks slack-app-token",
)
cred(
    "slack-webhook",
    {"command": f"curl -X POST https://hooks.slack.com/services/{SLACK_HOOK_PATH} -d @msg.json"},
    {"command": f"curl -X POST https://{r('slack-webhook')} -d @msg.json"},
    SLACK_HOOK_PATH,
    source="gitleaks slack-webhook-url",
)
cred(
    "stripe-secret-live",
    {"command": f"stripe --api-key {STRIPE_LIVE} charges list"},
    {"command": f"stripe --api-key {r('stripe-key')} charges list"},
    STRIPE_LIVE,
    source="gitleaks stripe-access-token",
)
cred(
    "stripe-secret-test",
    {"stdout": f"[{STRIPE_TEST}]"},
    {"stdout": f"[{r('stripe-key')}]"},
    STRIPE_TEST,
    source="gitleaks stripe-access-token",
)
cred(
    "stripe-restricted",
    {"stdout": STRIPE_RK},
    {"stdout": r("stripe-key")},
    STRIPE_RK,
    source="gitleaks stripe-access-token",
)
cred(
    "stripe-webhook-secret",
    {"content": f"endpoint_secret = '{STRIPE_WHSEC}'\n"},
    {"content": f"endpoint_secret = '{r('stripe-key')}'\n"},
    STRIPE_WHSEC,
    source="Stripe webhook docs",
)
cred(
    "google-api-key-in-url",
    {"url": f"https://maps.googleapis.com/maps/api/geocode/json?address=x&key={GOOGLE}"},
    {"url": f"https://maps.googleapis.com/maps/api/geocode/json?address=x&key={r('google-api-key')}"},
    GOOGLE,
    source="gitleaks gcp-api-key",
)
cred(
    "google-oauth-client-secret",
    {"stdout": json.dumps({"installed": {"client_id": "123-abc.apps.googleusercontent.com", "client_secret": GOCSPX}})},
    {
        "stdout": json.dumps(
            {
                "installed": {
                    "client_id": "123-abc.apps.googleusercontent.com",
                    "client_secret": r("google-oauth-secret"),
                }
            }
        )
    },
    GOCSPX,
    source="Google OAuth client JSON",
)
_GCP_SA = {
    "type": "service_account",
    "project_id": "proj-4711",
    "private_key_id": fake(40, HEX),
    "private_key": PEM_PKCS8_ESCAPED.replace("\\n", "\n") + "\n",
    "client_email": "svc@proj-4711.iam.gserviceaccount.com",
}
cred(
    "gcp-service-account-file-read",
    {"tool": "Read", "result": json.dumps(_GCP_SA, indent=2)},
    {"tool": "Read", "result": json.dumps({**_GCP_SA, "private_key": r("private-key") + "\n"}, indent=2)},
    PEM_PKCS8_ESCAPED.split("\\n")[2],
    source="gitleaks private-key (GCP service-account key file)",
)
cred(
    "gcp-service-account-dict",
    {"credentials_json": _GCP_SA},
    {"credentials_json": {**_GCP_SA, "private_key": SK}},
    PEM_PKCS8_ESCAPED.split("\\n")[3],
    source="GCP service-account key, parsed",
)
cred(
    "huggingface-token",
    {"stdout": f"Token: {HF}\nLogin successful"},
    {"stdout": f"Token: {r('huggingface-token')}\nLogin successful"},
    HF,
    source="gitleaks huggingface-access-token",
)
cred(
    "huggingface-env-hf-token",
    {"command": f"HF_TOKEN={HF} python train.py"},
    {"command": f"HF_TOKEN={r('huggingface-token')} python train.py"},
    HF,
    source="issue #14: HF_TOKEN=x…",
)
cred(
    "npm-token-in-npmrc",
    {"content": f"//registry.npmjs.org/:_authToken={NPM}\n"},
    {"content": f"//registry.npmjs.org/:_authToken={r('npm-token')}\n"},
    NPM,
    source="gitleaks npm-access-token",
)
cred(
    "pypi-token-in-pypirc",
    {"content": f"[pypi]\n  username = __token__\n  password = {PYPI}\n"},
    {"content": f"[pypi]\n  username = __token__\n  password = {r('pypi-token')}\n"},
    PYPI,
    source="gitleaks pypi-upload-token",
)
cred(
    "aws-access-key-and-secret-ini",
    {"tool": "Read", "result": f"[default]\naws_access_key_id = {AWS_AKIA}\naws_secret_access_key = {AWS_SECRET}\n"},
    {
        "tool": "Read",
        "result": f"[default]\naws_access_key_id = {r('aws-access-key-id')}\naws_secret_access_key = {ASSIGN}\n",
    },
    AWS_AKIA,
    AWS_SECRET,
    source="issue #14: lower-case aws_secret_access_key = … in an INI file",
)
cred(
    "aws-sts-credentials-json-text",
    {
        "stdout": json.dumps(
            {
                "Credentials": {
                    "AccessKeyId": AWS_ASIA,
                    "SecretAccessKey": AWS_SECRET,
                    "SessionToken": AWS_SESSION,
                    "Expiration": "2026-11-30T16:00:00Z",
                }
            },
            indent=2,
        )
    },
    {
        "stdout": json.dumps(
            {
                "Credentials": {
                    "AccessKeyId": r("aws-access-key-id"),
                    "SecretAccessKey": ASSIGN,
                    "SessionToken": ASSIGN,
                    "Expiration": "2026-11-30T16:00:00Z",
                }
            },
            indent=2,
        )
    },
    AWS_ASIA,
    AWS_SECRET,
    AWS_SESSION,
    source="aws sts assume-role output",
)
cred(
    "aws-sts-credentials-dict",
    {"Credentials": {"AccessKeyId": AWS_ASIA, "SecretAccessKey": AWS_SECRET}},
    {"Credentials": SK},
    AWS_ASIA,
    AWS_SECRET,
    source="aws sts assume-role output, parsed",
)
cred(
    "aws-env-export",
    {"command": f"export AWS_SECRET_ACCESS_KEY='{AWS_SECRET}'"},
    {"command": f"export AWS_SECRET_ACCESS_KEY='{ASSIGN}'"},
    AWS_SECRET,
    source="gitleaks generic-api-key",
)
cred(
    "jwt-bare",
    {"result_summary": f"got {JWT} back"},
    {"result_summary": f"got {r('jwt')} back"},
    JWT,
    source="gitleaks jwt",
)
cred(
    "jwt-bearer-header",
    [f"Authorization: Bearer {JWT}"],
    [f"Authorization: Bearer {r('jwt')}"],
    JWT,
    source="gitleaks jwt",
)
cred("pem-rsa", {"content": PEM_RSA}, {"content": r("private-key")}, PEM_RSA, source="gitleaks private-key")
cred(
    "pem-openssh-in-cat",
    {"stdout": f"$ cat ~/.ssh/id_ed25519\n{PEM_OPENSSH}\n$ "},
    {"stdout": f"$ cat ~/.ssh/id_ed25519\n{r('private-key')}\n$ "},
    PEM_OPENSSH,
    source="gitleaks private-key",
)
cred("pem-cut-off", {"stdout": PEM_EC_CUT}, {"stdout": r("private-key")}, PEM_EC_CUT, source="gitleaks private-key")
cred(
    "pem-pgp-block",
    {"stdout": f"gpg --export-secret-keys -a\n{PEM_PGP}"},
    {"stdout": f"gpg --export-secret-keys -a\n{r('private-key')}"},
    PEM_PGP,
    source="gitleaks private-key",
)
cred(
    "pem-in-escaped-json",
    {"stdout": '{"key": "' + PEM_PKCS8_ESCAPED + '\\n"}'},
    {"stdout": '{"key": "' + r("private-key") + '\\n"}'},
    PEM_PKCS8_ESCAPED,
    source="gitleaks private-key",
)
cred(
    "sendgrid-key",
    {"content": f"SENDGRID_API_KEY={SENDGRID}\n"},
    {"content": f"SENDGRID_API_KEY={r('sendgrid-key')}\n"},
    SENDGRID,
    source="gitleaks sendgrid-api-token",
)
cred(
    "sendgrid-key-in-code",
    {"new_string": f"sg = SendGridAPIClient('{SENDGRID}')\n"},
    {"new_string": f"sg = SendGridAPIClient('{r('sendgrid-key')}')\n"},
    SENDGRID,
    source="gitleaks sendgrid-api-token",
)
cred(
    "twilio-api-key-sid",
    {"stdout": f"Created API key {TWILIO_SK} (friendly name: ci)"},
    {"stdout": f"Created API key {r('twilio-key')} (friendly name: ci)"},
    TWILIO_SK,
    source="gitleaks twilio-api-key",
)
cred(
    "twilio-auth-token-env",
    {"content": f"TWILIO_ACCOUNT_SID={TWILIO_AC}\nTWILIO_AUTH_TOKEN={TWILIO_AUTH}\n"},
    {"content": f"TWILIO_ACCOUNT_SID={TWILIO_AC}\nTWILIO_AUTH_TOKEN={ASSIGN}\n"},
    TWILIO_AUTH,
    source="issue #14: Twilio auth tokens (account SIDs are not secrets)",
)
cred(
    "mailgun-private-key",
    {"command": f"curl -s --user 'api:{MAILGUN}' https://api.mailgun.net/v3/domains"},
    {"command": f"curl -s --user 'api:{r('mailgun-key')}' https://api.mailgun.net/v3/domains"},
    MAILGUN,
    source="gitleaks mailgun-private-api-token",
)
cred(
    "heroku-v2-key",
    {"stdout": f"heroku authorizations:create\nToken: {HEROKU_V2}"},
    {"stdout": f"heroku authorizations:create\nToken: {r('heroku-key')}"},
    HEROKU_V2,
    source="gitleaks heroku-api-key-v2",
)
cred(
    "heroku-uuid-key-env",
    {"command": f"HEROKU_API_KEY={UUID} heroku apps"},
    {"command": f"HEROKU_API_KEY={ASSIGN} heroku apps"},
    UUID,
    source="gitleaks heroku-api-key",
)
cred(
    "digitalocean-pat",
    {"command": f"doctl auth init -t {DO_PAT}"},
    {"command": f"doctl auth init -t {r('digitalocean-token')}"},
    DO_PAT,
    source="gitleaks digitalocean-pat",
)
cred(
    "shopify-access-token",
    {"headers_text": f"X-Shopify-Access-Token: {SHOPIFY}"},
    {"headers_text": f"X-Shopify-Access-Token: {r('shopify-token')}"},
    SHOPIFY,
    source="gitleaks shopify-access-token",
)
cred(
    "newrelic-user-key",
    {"command": f"newrelic profile add --apiKey {NEWRELIC} --region us"},
    {"command": f"newrelic profile add --apiKey {r('newrelic-key')} --region us"},
    NEWRELIC,
    source="gitleaks new-relic-user-api-key",
)
cred(
    "newrelic-license-key-yaml",
    {"content": f"common: &default_settings\n  license_key: '{NR_LICENSE}'\n"},
    {"content": f"common: &default_settings\n  license_key: '{ASSIGN}'\n"},
    NR_LICENSE,
    source="newrelic.yml",
)
cred(
    "datadog-api-key-env",
    {"command": f"DD_API_KEY={DATADOG} DD_SITE=datadoghq.com bash install.sh"},
    {"command": f"DD_API_KEY={ASSIGN} DD_SITE=datadoghq.com bash install.sh"},
    DATADOG,
    source="gitleaks datadog",
)
cred(
    "datadog-headers-in-curl",
    {
        "command": f'curl -H "DD-API-KEY: {DATADOG}" -H "DD-APPLICATION-KEY: {DATADOG_APP}" '
        "https://api.datadoghq.com/api/v1/validate"
    },
    {
        "command": f'curl -H "DD-API-KEY: {ASSIGN}" -H "DD-APPLICATION-KEY: {ASSIGN}" https://api.datadoghq.com/api/v1/validate'
    },
    DATADOG,
    DATADOG_APP,
    source="Datadog API docs",
)
cred(
    "discord-bot-token-env",
    {"content": f"DISCORD_BOT_TOKEN={DISCORD_BOT}\n"},
    {"content": f"DISCORD_BOT_TOKEN={ASSIGN}\n"},
    DISCORD_BOT,
    source="detect-secrets DiscordBotTokenDetector",
)
cred(
    "discord-bot-authorization",
    {"command": f'curl -H "Authorization: Bot {DISCORD_BOT}" https://discord.com/api/v10/users/@me'},
    {"command": f'curl -H "Authorization: Bot {r("auth-header")}" https://discord.com/api/v10/users/@me'},
    DISCORD_BOT,
    source="Discord API docs",
)
cred(
    "discord-bot-token-bare",
    {"new_string": f'client.run("{DISCORD_BOT}")\n'},
    {"new_string": f'client.run("{r("discord-token")}")\n'},
    DISCORD_BOT,
    source="detect-secrets DiscordBotTokenDetector",
    miss="no literal prefix and no secret name: only a dot-separated base64 shape, which JWT-less "
    "identifiers share; gitleaks also needs a 'discord' keyword nearby",
)
cred(
    "discord-webhook",
    {"url": f"https://discord.com/api/webhooks/{DISCORD_HOOK_ID}/{DISCORD_HOOK_TOKEN}"},
    {"url": f"https://discord.com/api/webhooks/{DISCORD_HOOK_ID}/{r('discord-webhook')}"},
    DISCORD_HOOK_TOKEN,
    source="Discord webhook URL",
)
cred(
    "telegram-bot-token-url",
    {"command": f"curl https://api.telegram.org/bot{TELEGRAM_ID}:{TELEGRAM_SECRET}/getMe"},
    {"command": f"curl https://api.telegram.org/bot{r('telegram-bot-token')}/getMe"},
    TELEGRAM_SECRET,
    source="gitleaks telegram-bot-api-token",
)
cred(
    "azure-storage-connection-string",
    {
        "content": f'AZURE_STORAGE_CONNECTION_STRING="DefaultEndpointsProtocol=https;AccountName=acct7;'
        f'AccountKey={AZURE_ACCOUNT_KEY};EndpointSuffix=core.windows.net"\n'
    },
    {
        "content": f'AZURE_STORAGE_CONNECTION_STRING="DefaultEndpointsProtocol=https;AccountName=acct7;'
        f'AccountKey={ASSIGN};EndpointSuffix=core.windows.net"\n'
    },
    AZURE_ACCOUNT_KEY,
    source="issue #14: Azure AccountKey=; detect-secrets AzureStorageKeyDetector",
)
cred(
    "azure-sas-url",
    {
        "url": f"https://acct7.blob.core.windows.net/c/b.txt?sv=2022-11-02&ss=b&srt=co&sp=rl"
        f"&se=2026-12-01T00:00:00Z&spr=https&sig={AZURE_SAS_SIG}"
    },
    {
        "url": "https://acct7.blob.core.windows.net/c/b.txt?sv=2022-11-02&ss=b&srt=co&sp=rl"
        f"&se=2026-12-01T00:00:00Z&spr=https&sig={ASSIGN}"
    },
    AZURE_SAS_SIG,
    source="issue #14: &sig= in URLs",
)
cred(
    "azure-ad-client-secret",
    {"stdout": f'{{"keyId": "{UUID}", "secretText": "{AZURE_AD}"}}'},
    {"stdout": f'{{"keyId": "{UUID}", "secretText": "{r("azure-client-secret")}"}}'},
    AZURE_AD,
    source="gitleaks azure-ad-client-secret (az ad app credential reset)",
)
cred(
    "vault-service-token",
    {"command": f"VAULT_ADDR=https://vault:8200 vault login {VAULT}"},
    {"command": f"VAULT_ADDR=https://vault:8200 vault login {r('vault-token')}"},
    VAULT,
    source="gitleaks vault-service-token",
)
cred(
    "age-secret-key",
    {"stdout": f"# created: 2026-11-30\n# public key: {AGE_PUBLIC}\n{AGE}\n"},
    {"stdout": f"# created: 2026-11-30\n# public key: {AGE_PUBLIC}\n{r('age-secret-key')}\n"},
    AGE,
    source="gitleaks age-secret-key",
)

# =====================================================================================
# Credentials named by their context (the key rule, read in text)
# =====================================================================================

cred(
    "url-query-access-token",
    {"url": f"https://graph.facebook.com/me?fields=id&access_token={OPAQUE}"},
    {"url": f"https://graph.facebook.com/me?fields=id&access_token={ASSIGN}"},
    OPAQUE,
    source="issue #14: ?access_token= in URLs",
)
cred(
    "url-query-security-token",
    {"url": f"https://web-api.tp.entsoe.eu/api?securityToken={UUID}&documentType=A09"},
    {"url": f"https://web-api.tp.entsoe.eu/api?securityToken={ASSIGN}&documentType=A09"},
    UUID,
    source="issue #14: ?securityToken=…&documentType=A09 (public tracker)",
)
cred(
    "yaml-api-token",
    {"content": f"service:\n  name: billing\n  api_token: {OPAQUE}\n  retries: 3\n"},
    {"content": f"service:\n  name: billing\n  api_token: {ASSIGN}\n  retries: 3\n"},
    OPAQUE,
    source="issue #14: YAML api_token: …",
)
cred(
    "cli-password-equals",
    {"command": f"psql-wrapper --host db --password={PASSWORD2} --dbname app"},
    {"command": f"psql-wrapper --host db --password={ASSIGN} --dbname app"},
    PASSWORD2,
    source="issue #14: --password=… on command lines",
)
cred(
    "cli-password-space",
    {"command": f"docker login registry.example.com --username ci --password {PASSWORD2}"},
    {"command": f"docker login registry.example.com --username ci --password {ASSIGN}"},
    PASSWORD2,
    source="docker login",
)
cred(
    "mysql-p-glued",
    {"command": f"mysql -u root -p{PASSWORD2} -h 127.0.0.1 app < dump.sql"},
    {"command": f"mysql -u root -p{r('password-flag')} -h 127.0.0.1 app < dump.sql"},
    PASSWORD2,
    source="issue #14: -pSECRET on command lines",
)
cred(
    "mysqldump-p-quoted",
    {"command": f"mysqldump -uadmin -p'{PASSWORD}' shop > shop.sql"},
    {"command": f"mysqldump -uadmin -p'{r('password-flag')}' shop > shop.sql"},
    PASSWORD,
    source="mysqldump",
)
cred(
    "sshpass-p",
    {"command": f"sshpass -p '{PASSWORD}' ssh deploy@10.0.0.5 uptime"},
    {"command": f"sshpass -p '{r('password-flag')}' ssh deploy@10.0.0.5 uptime"},
    PASSWORD,
    source="sshpass",
)
cred(
    "conninfo-password",
    {"dsn": f"host=db.internal user=app password={PASSWORD2} dbname=prod sslmode=require"},
    {"dsn": f"host=db.internal user=app password={ASSIGN} dbname=prod sslmode=require"},
    PASSWORD2,
    source="issue #14: password= inside libpq connection strings",
)
cred(
    "url-query-password",
    {"dsn": f"postgres://app@db.internal/prod?password={PASSWORD2}&sslmode=require"},
    {"dsn": f"postgres://app@db.internal/prod?password={ASSIGN}&sslmode=require"},
    PASSWORD2,
    source="issue #14: postgres://u@h/db?password=…&sslmode=require",
)
cred(
    "sslpassword",
    {"dsn": f"host=h dbname=d sslcert=c.crt sslkey=c.key sslpassword={PASSWORD2}"},
    {"dsn": f"host=h dbname=d sslcert=c.crt sslkey=c.key sslpassword={ASSIGN}"},
    PASSWORD2,
    source="issue #14: sslpassword= (public tracker)",
)
cred(
    "jdbc-url-password",
    {"url": f"jdbc:mysql://db:3306/shop?user=shop&password={PASSWORD2}&useSSL=true"},
    {"url": f"jdbc:mysql://db:3306/shop?user=shop&password={ASSIGN}&useSSL=true"},
    PASSWORD2,
    source="JDBC URL",
)
cred(
    "odbc-pwd",
    {"dsn": f"Driver={{ODBC Driver 18 for SQL Server}};Server=tcp:db,1433;Uid=sa;Pwd={PASSWORD2};"},
    {"dsn": f"Driver={{ODBC Driver 18 for SQL Server}};Server=tcp:db,1433;Uid=sa;Pwd={ASSIGN};"},
    PASSWORD2,
    source="ODBC connection string",
)
cred(
    "ado-net-password",
    {"dsn": f"Server=db;Database=shop;User Id=sa;Password={PASSWORD2};TrustServerCertificate=True"},
    {"dsn": f"Server=db;Database=shop;User Id=sa;Password={ASSIGN};TrustServerCertificate=True"},
    PASSWORD2,
    source="ADO.NET connection string",
)
cred(
    "url-userinfo-postgres",
    {"dsn": f"postgres://app:{PASSWORD2}@db.internal:5432/prod"},
    {"dsn": f"postgres://app:{URLPW}@db.internal:5432/prod"},
    PASSWORD2,
    source="detect-secrets BasicAuthDetector",
)
cred(
    "url-userinfo-password-with-at",
    {"dsn": "postgresql://dune:UlF@x@db:15432/dune"},
    {"dsn": f"postgresql://dune:{URLPW}@db:15432/dune"},
    "UlF@x",
    source="issue #14: a password holding '@'",
)
cred(
    "url-userinfo-redis-no-user",
    {"url": "redis://:pass@host:6379/0"},
    {"url": f"redis://:{URLPW}@host:6379/0"},
    ":pass@",
    source="issue #14: redis://:pass@host",
)
cred(
    "url-userinfo-amqp",
    {"url": f"amqp://user:{PASSWORD2}@rabbit:5672/vhost"},
    {"url": f"amqp://user:{URLPW}@rabbit:5672/vhost"},
    PASSWORD2,
    source="issue #14: amqp://user:pass@host",
)
cred(
    "url-userinfo-mongodb-srv",
    {"url": "mongodb+srv://u:p@h/db?retryWrites=true"},
    {"url": f"mongodb+srv://u:{URLPW}@h/db?retryWrites=true"},
    ":p@",
    source="issue #14: mongodb+srv://u:p@h",
)
cred(
    "url-userinfo-https-token",
    {"command": f"git push https://x-access-token:{OPAQUE}@github.com/o/r.git"},
    {"command": f"git push https://x-access-token:{URLPW}@github.com/o/r.git"},
    OPAQUE,
    source="GitHub Actions",
)
cred(
    "url-userinfo-token-as-user",
    {"remote": f"https://{GHP}:x-oauth-basic@github.com/o/r.git"},
    {"remote": f"https://{r('github-token')}:{URLPW}@github.com/o/r.git"},
    GHP,
    source="GitHub docs",
)
cred(
    "url-userinfo-pip-index",
    {"command": f"pip install --index-url https://ci:{PASSWORD2}@pypi.example.com/simple pkg"},
    {"command": f"pip install --index-url https://ci:{URLPW}@pypi.example.com/simple pkg"},
    PASSWORD2,
    source="pip",
)
cred(
    "set-cookie-header",
    {"stdout": f"HTTP/2 200\nset-cookie: sessionid={OPAQUE}; Path=/; HttpOnly; Secure\nvary: Cookie\n"},
    {"stdout": f"HTTP/2 200\nset-cookie: {r('cookie')}\nvary: Cookie\n"},
    OPAQUE,
    source="issue #14: Set-Cookie values",
)
cred(
    "cookie-header-in-curl",
    {"command": f'curl -H "Cookie: csrftoken=abc; sessionid={OPAQUE}" https://app.example.com/api'},
    {"command": f'curl -H "Cookie: {r("cookie")}" https://app.example.com/api'},
    OPAQUE,
    source="curl",
)
cred(
    "json-text-in-string",
    {"tool_output": json.dumps({"ok": True, "config": json.dumps({"api_key": PASSWORD2})})},
    {"tool_output": json.dumps({"ok": True, "config": json.dumps({"api_key": ASSIGN})})},
    PASSWORD2,
    source='issue #14: "{\\"api_key\\": \\"…\\"}" inside a tool output string',
)
cred(
    "json-text-api-key",
    {"stdout": '{"name": "svc", "api_key": "' + PASSWORD2 + '"}'},
    {"stdout": '{"name": "svc", "api_key": "' + ASSIGN + '"}'},
    PASSWORD2,
    source="the key rule, in text",
)
cred(
    "anthropic-auth-token-quoted",
    {"content": f'ANTHROPIC_AUTH_TOKEN="{OPAQUE}"\nANTHROPIC_BASE_URL="https://proxy"\n'},
    {"content": f'ANTHROPIC_AUTH_TOKEN="{ASSIGN}"\nANTHROPIC_BASE_URL="https://proxy"\n'},
    OPAQUE,
    source='issue #14: ANTHROPIC_AUTH_TOKEN="…" (public tracker)',
)
cred(
    "x-api-key-header",
    {"command": f"curl https://api.anthropic.com/v1/messages -H 'x-api-key: {OPAQUE}'"},
    {"command": f"curl https://api.anthropic.com/v1/messages -H 'x-api-key: {ASSIGN}'"},
    OPAQUE,
    source="issue #14: x-api-key header",
)
cred(
    "x-goog-api-key-header",
    {"command": f'curl -H "X-Goog-Api-Key: {PASSWORD2}" https://generativelanguage.googleapis.com'},
    {"command": f'curl -H "X-Goog-Api-Key: {ASSIGN}" https://generativelanguage.googleapis.com'},
    PASSWORD2,
    source="issue #14: x-goog-api-key header",
)
cred(
    "api-key-header-azure-openai",
    {"stdout": f"> POST /openai/deployments/gpt/chat HTTP/1.1\n> API-KEY: {DATADOG}\n"},
    {"stdout": f"> POST /openai/deployments/gpt/chat HTTP/1.1\n> API-KEY: {ASSIGN}\n"},
    DATADOG,
    source="issue #14: api-key headers (any case)",
)
cred(
    "dict-apikey-variants",
    {"config": {"apiKey": "camel-value-5", "APIKEY": "upper-value-6", "privateKey": "pk-value-7"}},
    {"config": {"apiKey": SK, "APIKEY": SK, "privateKey": SK}},
    "camel-value-5",
    "upper-value-6",
    "pk-value-7",
    source="issue #14: apiKey/APIKEY/privateKey keys",
)
cred(
    "proxy-authorization-digest",
    {
        "stdout": 'Proxy-Authorization: Digest username="u", realm="proxy", nonce="dcd98b", '
        'response="6629fae49393a05397450978507c4ef1"\nHost: x'
    },
    {"stdout": f"Proxy-Authorization: Digest {r('auth-header')}\nHost: x"},
    "6629fae49393a05397450978507c4ef1",
    source="issue #14: Proxy-Authorization: Digest …",
)
cred(
    "authorization-token-scheme",
    {"h": "Authorization: Token 9f8e7d6c5b4a39281706"},
    {"h": f"Authorization: Token {r('auth-header')}"},
    "9f8e7d6c5b4a39281706",
    source="DRF token auth",
)
cred(
    "authorization-aws-sigv4",
    {
        "stdout": f"Authorization: AWS4-HMAC-SHA256 Credential={AWS_AKIA}/20261130/us-east-1/s3/aws4_request, "
        f"SignedHeaders=host;x-amz-date, Signature={fake(64, HEX)}"
    },
    {"stdout": f"Authorization: AWS4-HMAC-SHA256 {r('auth-header')}"},
    AWS_AKIA,
    source="AWS SigV4",
)
cred(
    "bearer-in-curl-command",
    {"command": f'curl -H "Authorization: Bearer {OPAQUE}" https://api.x.io/v1'},
    {"command": f'curl -H "Authorization: Bearer {r("bearer-token")}" https://api.x.io/v1'},
    OPAQUE,
    source='issue #14: curl -H "Authorization: Bearer …" inside a command string',
)
cred(
    "bearer-short-in-header-dict-text",
    {"h": 'headers={"Authorization": "Bearer abcdefgh"}'},
    {"h": f'headers={{"Authorization": "Bearer {r("bearer-token")}"}}'},
    "abcdefgh",
    source="requests",
)
cred(
    "bearer-lowercase",
    {"h": f"authorization: bearer {OPAQUE}"},
    {"h": f"authorization: bearer {r('bearer-token')}"},
    OPAQUE,
    source="HTTP/2 lower-case headers",
)
cred(
    "basic-auth-header",
    {"h": f"Authorization: Basic {BASIC}"},
    {"h": f"Authorization: Basic {r('basic-auth')}"},
    BASIC,
    source="detect-secrets BasicAuthDetector",
)
cred(
    "dotenv-file",
    {
        "tool": "Read",
        "result": f"DEBUG=0\nDATABASE_PASSWORD={PASSWORD2}\nSTRIPE_SECRET_KEY={STRIPE_LIVE}\n"
        f"JWT_SECRET='{OPAQUE}'\nPORT=8000\n",
    },
    {
        "tool": "Read",
        "result": f"DEBUG=0\nDATABASE_PASSWORD={ASSIGN}\nSTRIPE_SECRET_KEY={r('stripe-key')}\n"
        f"JWT_SECRET='{ASSIGN}'\nPORT=8000\n",
    },
    PASSWORD2,
    STRIPE_LIVE,
    OPAQUE,
    source=".env files",
)
cred(
    "python-hardcoded-secrets",
    {
        "tool": "Write",
        "args": {
            "file_path": "settings.py",
            "content": f'DEBUG = False\nSECRET_KEY = "django-insecure-{fake(40, LOWER_ALNUM)}"\n'
            f'DB_PASSWORD = "{PASSWORD2}"\n',
        },
    },
    {
        "tool": "Write",
        "args": {
            "file_path": "settings.py",
            "content": f'DEBUG = False\nSECRET_KEY = "{ASSIGN}"\nDB_PASSWORD = "{ASSIGN}"\n',
        },
    },
    PASSWORD2,
    source="Django settings.py",
)
cred(
    "pydantic-default",
    {"new_string": f'class Settings(BaseSettings):\n    db_password: str = "{PASSWORD2}"\n'},
    {"new_string": f'class Settings(BaseSettings):\n    db_password: str = "{ASSIGN}"\n'},
    PASSWORD2,
    source="pydantic settings",
)
cred(
    "js-client-secret",
    {"new_string": f"const client = new Client({{ clientId: 'abc', clientSecret: '{OPAQUE}' }});"},
    {"new_string": f"const client = new Client({{ clientId: 'abc', clientSecret: '{ASSIGN}' }});"},
    OPAQUE,
    source="OAuth SDKs",
)
cred(
    "terraform-client-secret",
    {"content": f'provider "azurerm" {{\n  client_id     = "{UUID}"\n  client_secret = "{AZURE_AD}"\n}}\n'},
    {
        "content": f'provider "azurerm" {{\n  client_id     = "{UUID}"\n'
        f'  client_secret = "{r("azure-client-secret")}"\n}}\n'
    },
    AZURE_AD,
    source="terraform azurerm provider",
)
cred(
    "xml-password",
    {"stdout": f"<server>\n  <id>nexus</id>\n  <username>ci</username>\n  <password>{PASSWORD2}</password>\n</server>"},
    {"stdout": f"<server>\n  <id>nexus</id>\n  <username>ci</username>\n  <password>{ASSIGN}</password>\n</server>"},
    PASSWORD2,
    source="Maven settings.xml",
)
cred(
    "docker-compose-env",
    {"content": f"services:\n  db:\n    environment:\n      POSTGRES_PASSWORD: {PASSWORD2}\n      POSTGRES_DB: app\n"},
    {"content": f"services:\n  db:\n    environment:\n      POSTGRES_PASSWORD: {ASSIGN}\n      POSTGRES_DB: app\n"},
    PASSWORD2,
    source="docker-compose.yml",
)
cred(
    "k8s-secret-stringdata",
    {"stdout": f'apiVersion: v1\nkind: Secret\nstringData:\n  password: "{PASSWORD}"\n  username: admin\n'},
    {"stdout": f'apiVersion: v1\nkind: Secret\nstringData:\n  password: "{ASSIGN}"\n  username: admin\n'},
    PASSWORD,
    source="Kubernetes Secret",
)
cred(
    "k8s-env-name-value",
    {"content": f"env:\n  - name: API_TOKEN\n    value: {OPAQUE}\n"},
    {"content": f"env:\n  - name: API_TOKEN\n    value: {ASSIGN}\n"},
    OPAQUE,
    source="Kubernetes pod spec",
    miss="the secret name and its value are two YAML keys apart ('name:' / 'value:'); reading that "
    "needs a YAML-aware rule, not a trigger and a separator",
)
cred(
    "docker-login-p",
    {"command": f"docker login -u ci -p {PASSWORD2} registry.example.com"},
    {"command": f"docker login -u ci -p {r('password-flag')} registry.example.com"},
    PASSWORD2,
    source="docker login",
    miss="'-p VALUE' is a password only for some programs (docker login, sshpass, mysql -pX); docker's is "
    "deprecated in favour of --password-stdin, and -p is a port or a path elsewhere",
)

# =====================================================================================
# The key rule on JSON payloads, env values
# =====================================================================================

cred("key-api_key", {"api_key": "abc-not-shaped-123"}, {"api_key": SK}, "abc-not-shaped-123", source="key rule")
cred(
    "key-authorization-nested",
    {"request": {"headers": {"Authorization": "Token opaque-value-1"}}},
    {"request": {"headers": {"Authorization": SK}}},
    "opaque-value-1",
    source="key rule",
)
cred(
    "key-password-in-list",
    {"users": [{"name": "ann", "password": "correct horse"}]},
    {"users": [{"name": "ann", "password": SK}]},
    "correct horse",
    source="key rule",
)
cred(
    "key-client_secret-deep",
    {"a": [{"b": {"oauth": {"client_secret": "cs-value-99"}}}]},
    {"a": [{"b": {"oauth": {"client_secret": SK}}}]},
    "cs-value-99",
    source="key rule",
)
cred(
    "key-env-github-token",
    {"env": {"GITHUB_TOKEN": "plain-value-42", "HOME": "/root"}},
    {"env": {"GITHUB_TOKEN": SK, "HOME": "/root"}},
    "plain-value-42",
    source="key rule",
)
cred(
    "key-x-api-key-header",
    {"headers": {"X-Api-Key": "hdr-value-17"}},
    {"headers": {"X-Api-Key": SK}},
    "hdr-value-17",
    source="key rule",
)
cred(
    "key-cookie-header",
    {"headers": {"Cookie": "session=s3ss10n-v4lue"}},
    {"headers": {"Cookie": SK}},
    "s3ss10n-v4lue",
    source="key rule",
)
cred(
    "key-set-cookie-header",
    {"headers": {"set-cookie": "sid=c00kie-v4lue; HttpOnly"}},
    {"headers": {"set-cookie": SK}},
    "c00kie-v4lue",
    source="key rule",
)
cred(
    "key-private_key-subtree",
    {"private_key": {"kty": "RSA", "d": "subtree-d-value"}},
    {"private_key": SK},
    "subtree-d-value",
    source="key rule",
)
cred(
    "key-db_password-number",
    {"db_password": 98765432},
    {"db_password": SK},
    "98765432",
    source="key rule: a PIN-sized number",
)
cred(
    "key-refresh-token",
    {"oauth": {"access_token": "at-1", "refresh_token": "rt-value-2", "expires_in": 3600}},
    {"oauth": {"access_token": SK, "refresh_token": SK, "expires_in": 3600}},
    "rt-value-2",
    source="OAuth token response",
)
cred(
    "key-cookies-mapping",
    {"request": {"url": "https://x", "cookies": {"sessionid": "sess-abc-123", "theme": "dark", "n": 2}}},
    {"request": {"url": "https://x", "cookies": {"sessionid": SK, "theme": SK, "n": 2}}},
    "sess-abc-123",
    source="requests/httpx cookies= (a bare plural holding a mapping)",
)
cred(
    "key-playwright-cookies",
    {"cookies": [{"name": "sid", "value": "pw-cookie-9", "httpOnly": True}]},
    {"cookies": [{"name": SK, "value": SK, "httpOnly": True}]},
    "pw-cookie-9",
    source="Playwright context.cookies()",
)
cred(
    "env-value-daemon",
    {"command": f"./deploy --target prod{DAEMON_ENV}x"},
    {"command": f"./deploy --target prod{ENV}x"},
    DAEMON_ENV,
    source="env values",
)
cred("env-value-client", {"stdout": f"echo: {CLIENT_ENV}"}, {"stdout": f"echo: {ENV}"}, CLIENT_ENV, source="env values")
cred(
    "env-value-in-list",
    {"argv": ["tool", "--pass", CLIENT_ENV]},
    {"argv": ["tool", "--pass", ENV]},
    CLIENT_ENV,
    source="env values",
)
cred(
    "env-value-next-to-token",
    {"stdout": f"{CLIENT_ENV}{GHP}"},
    {"stdout": f"{ENV}{r('github-token')}"},
    CLIENT_ENV,
    GHP,
    source="env values",
)

# =====================================================================================
# Near-misses: must come back unchanged (the very same object)
# =====================================================================================

keep(
    "usage-counters-dict",
    {
        "usage": {
            "input_tokens": 1234,
            "output_tokens": 567,
            "cache_read_input_tokens": 89,
            "cache_creation_input_tokens": 0,
            "total_tokens": 1890,
        }
    },
    source="issue #14: usage counters",
)
keep(
    "usage-counters-json-text",
    {"stdout": '{"usage": {"input_tokens": 12, "output_tokens": 3, "cache_read_input_tokens": 40960}}'},
    source="issue #14: usage counters",
)
keep(
    "max-tokens-kwarg",
    {"content": "client.messages.create(model=m, max_tokens=4096, messages=msgs)\n"},
    source="issue #14: max_tokens=4096 (public tracker)",
)
keep(
    "tokenizer-flag",
    {"command": "python prep.py --tokenizer=cl100k_base --max-tokens 512"},
    source="issue #14: --tokenizer=cl100k",
)
keep(
    "num-speculative-tokens",
    {"command": "vllm serve m --speculative-config '{\"num_speculative_tokens\": 5}' --num_speculative_tokens=5"},
    source="issue #14: num_speculative_tokens=5 (public tracker)",
)
keep(
    "tokenizers-parallelism",
    {"command": "TOKENIZERS_PARALLELISM=false python train.py"},
    source="issue #14: TOKENIZERS_PARALLELISM=false (public tracker)",
)
keep(
    "llama-cpp-override-tensor",
    {"command": "llama-server -m q.gguf --override-tensor per_layer_token_embd.weight=CPU"},
    source="issue #14: per_layer_token_embd.weight=CPU (public tracker)",
)
keep(
    "sk-inside-a-word",
    {"text": "We compare risk-adjusted returns and task-specific, disk-backed caches."},
    source="issue #14: risk-adjusted returns (public tracker)",
)
keep(
    "max-keys-counters",
    {"MaxKeys": 1000, "max_keys": "1000", "num_keys": "3", "total_keys": "0", "KeyCount": 3},
    source="issue #14: MaxKeys, max_keys, num_keys, total_keys (S3 ListObjects)",
)
keep(
    "max-keys-in-text",
    {"stdout": "<ListBucketResult><MaxKeys>1000</MaxKeys><KeyCount>2</KeyCount></ListBucketResult>"},
    source="S3 ListObjects XML",
)
keep(
    "secrets-and-cookies-counts",
    {"secrets": 0, "cookies": 2, "summary": {"secrets": "0", "cookies": "2"}},
    source="issue #14: secrets: 0, cookies: 2",
)
keep(
    "secrets-as-names",
    {"workflow": {"secrets": ["NPM_TOKEN", "PYPI_TOKEN"], "keys": ["a", "b"]}},
    source="a list of secret NAMES",
)
keep(
    "yaml-counts",
    {"content": "limits:\n  max_keys: 1000\n  num_tokens: 4096\n  secrets: 0\n  cookies: 2\n"},
    source="issue #14: counters in text",
)
keep(
    "sha256-digests",
    {"stdout": f"sha256:{fake(64, HEX)}  dist/traced-0.1.tar.gz\n{fake(64, HEX)}  README.md"},
    source="sha256sum output",
)
keep(
    "sha1-and-git-shas",
    {"stdout": f"commit {fake(40, HEX)}\nMerge: {fake(7, HEX)} {fake(7, HEX)}\nparent {fake(40, HEX)}"},
    source="git log",
)
keep("docker-digest", {"image": "python@sha256:" + fake(64, HEX)}, source="docker image digests")
keep("uuids", {"session_id": "3f2b8c1e-9d4a-4f6b-8e2c-7a1d5b9c0e34", "request_id": UUID}, source="ids")
keep(
    "ulid-and-tool-ids",
    {"session_id": "01J" + fake(23, "0123456789ABCDEFGHJKMNPQRSTVWXYZ"), "call_id": "toolu_01HXYZ3K9P2QW8E7R6T5Y4U3I2"},
    source="ids",
)
keep(
    "base64-png-data-url",
    {
        "content": [
            {"type": "image", "source": "data:image/png;base64," + base64.b64encode(_RNG.randbytes(900)).decode()}
        ]
    },
    source="issue #14: base64 images",
)
keep(
    "base64-file-content",
    {"path": "logo.png", "encoding": "base64", "content": base64.b64encode(_RNG.randbytes(600)).decode()},
    source="base64 file content",
)
keep(
    "tokenizer-names",
    {"tokenizer": "cl100k_base", "alt": ["o200k_base", "gpt2", "p50k_base"], "token_count": 512},
    source="tokenizer names",
)
keep(
    "tokenizer-special-tokens",
    {"eos_token": "</s>", "pad_token": "<pad>", "bos_token": "<s>", "unk_token": "<unk>"},
    source="tokenizer_config.json",
)
keep(
    "pagination-tokens",
    {"next_token": "eyJvZmZzZXQiOjEwMH0", "page_token": "CAoQAA", "NextContinuationToken": "1ueGcxLPRx1Tr"},
    source="pagination cursors",
)
keep(
    "aws-account-ids",
    {"stdout": "arn:aws:iam::123456789012:role/deploy\nAccount: 210987654321\nUserId: AIDA7ZXYWVUTSRQPONML"},
    source="issue #14: AWS account ids",
)
keep(
    "twilio-account-sid",
    {"stdout": f"Account SID: {TWILIO_AC}\nFriendly name: prod"},
    source="issue #14: AC + 32 hex is an account SID, not a secret",
)
keep(
    "ssh-public-key",
    {
        "ssh_public_key": f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{fake(43, B64)} u@h",
        "stdout": f"ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ{fake(200, B64)} deploy@ci",
    },
    source="issue #14: public keys",
)
keep(
    "pem-public-key-and-cert",
    {
        "content": "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n"
        "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----"
    },
    source="public PEM blocks",
)
keep(
    "stripe-publishable-key",
    {"html": f'<script>Stripe("{STRIPE_PK}")</script>'},
    source="Stripe publishable keys are public by design (gitleaks matches sk_/rk_ only)",
)
keep(
    "sentry-dsn-public-key",
    {"content": f"SENTRY_DSN=https://{fake(32, HEX)}@o450123.ingest.sentry.io/5512345\n"},
    source="Sentry DSNs carry a public key",
)
keep(
    "url-plain-and-port",
    {
        "urls": [
            "https://github.com/anthropics/claude-code/issues?q=is%3Aopen",
            "http://localhost:8080/api/v1/items?user=a@b.c",
        ]
    },
    source="URLs",
)
keep(
    "url-user-only",
    {"remote": "ssh://git@github.com/org/repo.git", "scp": "git@github.com:org/repo.git"},
    source="URLs",
)
keep(
    "url-password-references",
    {"dsn": "postgres://app:${DB_PASSWORD}@db:5432/prod", "alt": "redis://:$REDIS_PASS@cache:6379"},
    source="templated DSNs",
)
keep(
    "env-references",
    {
        "command": 'curl -H "Authorization: Bearer $GITHUB_TOKEN" -H "X-Api-Key: ${API_KEY}" https://x',
        "yaml": "env:\n  NPM_TOKEN: ${{ secrets.NPM_TOKEN }}\n  API_KEY: '{{ vault_api_key }}'\n",
        "bat": "set PASSWORD=%DB_PASSWORD%",
    },
    source="gitleaks allowlist: references",
)
keep(
    "masked-values",
    {"stdout": "password=********\napi_key: xxxxxxxxxxxx\ntoken: [REDACTED]\nsecret=<redacted>"},
    source="already masked output",
)
keep(
    "placeholder-identifiers",
    {"content": "API_KEY=YOUR_API_KEY\napi_key = your_api_key_here\nclient_secret: <your client secret>"},
    source="README placeholders",
)
keep(
    "python-code-with-secret-names",
    {
        "tool": "Edit",
        "args": {
            "old_string": "x",
            "new_string": (
                "def connect(api_key: str, password: Optional[str] = None) -> Client:\n"
                '    token = get_token()\n    self.api_key = api_key\n    secret = os.environ["APP_SECRET"]\n'
                '    headers["Authorization"] = f"Bearer {token}"\n    if password == "":\n'
                '        raise ValueError("no password")\n'
                "    for key, value in secrets.items():\n        pass\n"
                "    return Client(api_key=api_key, password=password)\n"
            ),
        },
    },
    source="code that names secrets",
)
keep(
    "js-code-with-secret-names",
    {
        "new_string": "const apiKey = process.env.API_KEY;\nconst token = await auth.getToken();\n"
        "if (!apiKey) throw new Error('API key: missing');\n"
    },
    source="code",
)
keep(
    "terraform-variable",
    {"content": 'variable "db_password" {\n  type      = string\n  sensitive = true\n}\npassword = var.db_password\n'},
    source="terraform",
)
keep(
    "prose-about-secrets",
    {
        "text": "The secret to good code is tests. Rotate your API key in the dashboard; the token "
        "budget is 4k. Password: required. Keys: see below. We use cookies for sessions."
    },
    source="prose",
)
keep(
    "bearer-and-basic-prose",
    {
        "text": "The bearer of this letter is trusted. Bearer tokens go in the Authorization header "
        "(RFC 6750). Basic features cost nothing; basic authentication is off."
    },
    source="prose",
)
keep(
    "authorization-prose",
    {"text": "Authorization header missing; see the Authorization docs. authorization: pending"},
    source="prose",
)
keep(
    "token-type-json",
    {"stdout": '{"token_type": "Bearer", "expires_in": 3600, "scope": "read"}'},
    source="OAuth response",
)
keep(
    "password-policy",
    {"password_min_length": 12, "password_policy": "strong", "has_password": True, "requires_auth": False},
    source="settings",
)
keep(
    "secret-keys-null-or-flags",
    {"api_key": None, "token": False, "secret": "", "password": 0, "auth": -3},
    source="flags and counts under secret names",
)
keep(
    "structural-keys",
    {
        "primary_key": "user_id",
        "sort_key": "created_at#2026",
        "partition_key": "tenant-4711",
        "cache_key": "v1:users:list:page=2",
        "idempotency_key": "8c3f1f9e-7d55-4c41-9a0e-1f6ad2a4b1c2",
        "foreign_key": "orders.customer_id",
    },
    source="database keys",
)
keep(
    "structural-keys-in-code",
    {"content": "json.dumps(obj, sort_keys=True, indent=2)\nSORT_KEY=created_at MONKEY=banana12 ./run\n"},
    source="code",
)
keep(
    "sk-learn-and-prefixes",
    {
        "command": "pip install sk-learn scikit-learn",
        "doc": "ghp_ and glpat- and sk_live_123 and xoxb- are prefixes",
        "text": "sk-learn-compatible-estimator-wrappers and xoxo-hugs-and-kisses",
    },
    source="look-alike prefixes",
)
keep("hf-identifiers", {"code": "from huggingface_hub import hf_hub_download, hf_api_client_helper"}, source="code")
keep("eyj-single-segment", {"header": "eyJhbGciOiJIUzI1NiJ9 only"}, source="a JWT header alone")
keep("uppercase-headline", {"headline": "ASIAN MARKETS ROSE TODAY; AKIA IS A NAME"}, source="prose")
keep(
    "model-names",
    {"provider": "openai", "model": "gpt-4o-mini-2024-07-18", "finish_reason": "end_turn"},
    source="LLM calls",
)
keep(
    "paths-under-secret-names",
    {"command": "PWD=/home/u/project SSL_KEY=/etc/ssl/private/key.pem GNUPGHOME=~/.gnupg ./run"},
    source="env dump",
)
keep(
    "password-stdin-and-files",
    {
        "command": "cat pw.txt | docker login --password-stdin -u ci && gh auth login --with-token < token.txt "
        "&& app --token-file /run/secrets/token"
    },
    source="safe credential passing",
)
keep(
    "ports-and-p-flags",
    {
        "command": "mysql -h db -P 3306 -u app -p app_db && ssh -p 2222 host && mkdir -p out "
        "&& docker run -p 8080:80 img"
    },
    source="-p is a port or a flag",
)
keep(
    "pass-in-code-and-words",
    {"content": "try:\n    run()\nexcept Exception:\n    pass  # bypass the compass\n"},
    source="code",
)
keep(
    "author-and-oauth-words",
    {"content": "author: ann\nauthentication_method: oauth\nauthor_email: a@b.c\n"},
    source="metadata",
)
keep("csv-of-counts", {"stdout": "model,tokens,keys,secrets\ngpt,1200,3,0\nclaude,900,2,1\n"}, source="CSV")
keep(
    "numbers-after-secret-names",
    {"stdout": '{"password": 12, "token_count": 128}\nretries: 3; api_key=0'},
    source="small numbers under secret names are counts (as in payload dicts)",
)
keep(
    "comparisons-not-assignments",
    {"content": 'if token == "": return\nassert password != secret\nok = api_key is None\n'},
    source="code",
)
keep("getpass-prompt", {"content": 'pw = getpass.getpass("Password: ")\nkey = input("API key: ")\n'}, source="code")
keep(
    "kubernetes-secret-ref",
    {"content": "valueFrom:\n  secretKeyRef:\n    name: app-secrets\n    key: password\n"},
    source="Kubernetes secretKeyRef",
)
keep(
    "github-actions-secrets",
    {"content": "env:\n  GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }}\n  TOKEN: ${{ github.token }}\n"},
    source="GitHub Actions",
)
keep(
    "redaction-markers", {"stdout": f"token={ASSIGN} key {r('github-token')} https://u:{URLPW}@h"}, source="idempotence"
)
keep("short-env-like-value", {"command": "echo pw12345 done"}, source="values under the env-value minimum")
keep(
    "log-lines",
    {
        "stdout": "INFO auth: user ann authenticated via oauth2\nWARN token refresh in 30s\n"
        "DEBUG key rotation scheduled\n"
    },
    source="logs",
)
keep(
    "markdown-table-keys",
    {"stdout": "| Key | Action |\n|---|---|\n| Ctrl+K | search |\n| Esc | close |"},
    source="docs",
)
keep(
    "http-response-headers",
    {
        "stdout": "HTTP/2 200\ncontent-type: application/json\nx-ratelimit-remaining-tokens: 39000\n"
        "x-ratelimit-limit-requests: 500\nanthropic-ratelimit-input-tokens-remaining: 80000\n"
    },
    source="LLM API rate-limit headers",
)
keep(
    "rate-limit-header-dict",
    {
        "headers": {
            "x-ratelimit-remaining-tokens": "39000",
            "x-ratelimit-limit-tokens": "40000",
            "anthropic-ratelimit-output-tokens-reset": "2026-11-30T16:00:00Z",
        }
    },
    source="response headers as a dict (string values)",
)

# =====================================================================================
# Carried over from the first corpus (tests/redaction/test_redact.py before issue #14)
# =====================================================================================

cred("key-token", {"token": "tok-value-3"}, {"token": SK}, "tok-value-3", source="key rule")
cred(
    "key-stripe-env-style",
    {"env": {"STRIPE_KEY": "stripe-env-val-1"}},
    {"env": {"STRIPE_KEY": SK}},
    "stripe-env-val-1",
    source="key rule",
)
cred(
    "assignment-export",
    {"cmd": "export DATABASE_PASSWORD=hunter2hunter2 && ./migrate"},
    {"cmd": f"export DATABASE_PASSWORD={ASSIGN} && ./migrate"},
    "hunter2hunter2",
    source="shell",
)
cred(
    "assignment-quoted-with-spaces",
    {"content": 'OPENAI_API_KEY="proj key w1th spaces"\nDEBUG=1\n'},
    {"content": f'OPENAI_API_KEY="{ASSIGN}"\nDEBUG=1\n'},
    "proj key w1th spaces",
    source=".env files",
)
cred(
    "assignment-inline-env",
    {"cmd": "NPM_TOKEN=npm0paque42 npm publish"},
    {"cmd": f"NPM_TOKEN={ASSIGN} npm publish"},
    "npm0paque42",
    source="shell",
)
cred(
    "jwt-in-json-text",
    {"stdout": json.dumps({"id_tok": JWT})},
    {"stdout": json.dumps({"id_tok": r("jwt")})},
    JWT,
    source="gitleaks jwt",
)

keep("max-tokens-dict", {"model": "claude-sonnet-4", "max_tokens": 4096, "temperature": 0.2}, source="LLM calls")
keep("camel-case-counters", {"maxTokens": 2048, "inputTokens": 10, "promptTokens": 3}, source="LLM SDKs")
keep("task-prefix", {"branch": "task-1234567890abcdefghijklmnop"}, source="'sk-' inside a word")
keep(
    "base64-json-content",
    {"path": "package.json.b64", "content": base64.b64encode(b'{"name": "traced", "version": "0.1.0"}').decode()},
    source="base64 file content",
)
keep("bearer-date", {"text": "the bearer 2024-05-01 signed it; authorization: pending"}, source="prose")
keep("assignment-names-in-code", {"content": '("TOKEN=", "SECRET=", "KEY=", "PASSWORD="),'}, source="code")
keep("pwd-and-cwd", {"pwd": "/home/user/project", "cwd": "/home/user/project"}, source="shell state")

CREDENTIALS = [c for c in CASES if c.is_credential]
NEAR_MISSES = [c for c in CASES if not c.is_credential]
