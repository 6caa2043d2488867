# Sourced by scripts/*: makes .venv in the repo and installs the project into it.
# $1: the extras to install ("" or "test").
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$repo/.venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
fi
spec="$repo"
[ -n "${1:-}" ] && spec="$repo[$1]"
stamp="$venv/.installed-${1:-base}"
if [ ! -f "$stamp" ] || [ "$repo/pyproject.toml" -nt "$stamp" ]; then
  # The project was called "traced" before it became traced-daemon (the index's "traced" is
  # another project with the same import name): take out either, so one owns the package.
  "$venv/bin/python" -m pip uninstall -q -y traced >/dev/null 2>&1 || true
  "$venv/bin/python" -m pip install -q -e "$spec"
  touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
