"""traced's systemd user units, shipped in the wheel, and how they are rendered (sans-IO).

The templates live in ``units/`` beside this module (package data, so a ``pipx`` or
``uv tool`` install has them): ``traced.socket`` and ``traced.service`` with two
placeholders, ``@TRACED_BIN@`` (the absolute path of the ``traced`` executable, for
``ExecStart=``) and ``@TRACED_DOCS@`` (a ``file://`` URL of docs/service.md, for
``Documentation=``). ``traced service install`` (cli/service.py) writes them to
``${XDG_CONFIG_HOME:-~/.config}/systemd/user/``. Quoting follows systemd.service(5),
"Command lines", and systemd.unit(5), "Specifiers".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

UNITS = ("traced.socket", "traced.service")
"""The unit names, socket first (it is the one enabled)."""

TEMPLATES = Path(__file__).resolve().parent / "units"


def template(name: str) -> str:
    """The text of one shipped unit template (``name`` in :data:`UNITS`)."""
    if name not in UNITS:
        raise ValueError(f"not a traced unit: {name!r}")
    return (TEMPLATES / name).read_text(encoding="utf-8")


def docs_file() -> Path:
    """docs/service.md: the checkout's (source or editable install), else the copy in the wheel."""
    checkout = TEMPLATES.parents[3] / "docs" / "service.md"
    return checkout if checkout.is_file() else TEMPLATES / "service.md"


def unit_dir(env: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/systemd/user``, or ``$HOME/.config/systemd/user``; ValueError without either."""
    config = env.get("XDG_CONFIG_HOME") or ""
    if not config.startswith("/"):  # the XDG spec: a relative value is to be ignored
        home = env.get("HOME") or ""
        if not home.startswith("/"):
            raise ValueError("neither $XDG_CONFIG_HOME nor $HOME is an absolute path")
        config = home + "/.config"
    return Path(config) / "systemd" / "user"


def exec_quote(path: str) -> str:
    """``path`` as one word of ``ExecStart=``: ``%`` and ``$`` doubled, and double-quoted (with
    backslash escapes) when it holds whitespace, a quote or a backslash."""
    value = path.replace("%", "%%").replace("$", "$$")
    if re.search(r"[\s\"'\\]", value):
        value = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def file_url(path: Path) -> str:
    """A ``file://`` URL for ``Documentation=``: ``%`` and spaces percent-encoded, then ``%``
    doubled, since unit files expand specifiers there."""
    url = "file://" + str(path).replace("%", "%25").replace(" ", "%20")
    return url.replace("%", "%%")


def render(name: str, traced_bin: str, docs: Path | None = None) -> str:
    """Unit ``name`` with its placeholders filled: ``traced_bin`` is an absolute path."""
    if not traced_bin.startswith("/"):
        raise ValueError(f"ExecStart= needs an absolute path, not {traced_bin!r}")
    text = template(name).rstrip("\n") + "\n"
    text = text.replace("@TRACED_BIN@", exec_quote(traced_bin))
    return text.replace("@TRACED_DOCS@", file_url(docs if docs is not None else docs_file()))


def exec_start_binary(unit_text: str) -> str | None:
    """The executable an installed ``traced.service`` runs (``ExecStart=``'s first word, unquoted,
    ``%%``/``$$`` undone), or None when there is no ExecStart."""
    for line in unit_text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key.strip() == "ExecStart":
            value = value.strip().lstrip("-@:+!")
            if value.startswith('"'):
                m = re.match(r'"((?:[^"\\]|\\.)*)"', value)
                word = re.sub(r"\\(.)", r"\1", m.group(1)) if m else value.strip('"')
            else:
                word = value.split()[0] if value.split() else ""
            return word.replace("%%", "%").replace("$$", "$")
    return None
