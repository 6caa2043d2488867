"""The package version (one home: pyproject reads it from here) and the distribution name."""

__version__ = "0.1.0"

DISTRIBUTION = "traced-daemon"
"""The name on the package index (pyproject's ``[project] name``). The import package and the
command stay ``traced``; the index's ``traced`` is an unrelated project with the same import name."""
