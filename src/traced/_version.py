"""The package version (one home: pyproject reads it from here) and the distribution name."""

__version__ = "0.1.0"

DISTRIBUTION = "traced-daemon"
"""The name on the package index (pyproject's ``[project] name``). The import package and the
command stay ``traced``; the index's ``traced`` is an unrelated project with the same import name."""


def install_hint(extra: str, dist: str) -> str:
    """How to add the optional ``extra`` (which brings ``dist``) to the environment traced runs
    in: the pip, ``uv tool`` and ``pipx`` forms, naming this distribution, not PyPI's other ``traced``."""
    import sys

    name = f"{DISTRIBUTION}[{extra}]"
    return (f"install the extra into traced's environment ({sys.prefix}): pip install '{name}', "
            f"uv tool install '{name}', or pipx inject {DISTRIBUTION} {dist}")
