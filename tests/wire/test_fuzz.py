"""Coverage-guided fuzzing of the decoders with atheris, bounded (a fixed number of runs)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

CORPUS = Path(__file__).parent.parent / "fuzz" / "corpus"


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris does not install here")
def test_atheris_finds_no_crash(tmp_path: Path) -> None:
    work = tmp_path / "corpus"
    work.mkdir()
    for seed in CORPUS.iterdir():  # found crashers and seeds, kept as regression inputs
        (work / seed.name).write_bytes(seed.read_bytes())
    target = Path(__file__).parent.parent / "fuzz" / "fuzz_decoder.py"
    res = subprocess.run([sys.executable, str(target), "-runs=100000", "-max_len=512", "-rss_limit_mb=1024",
                          f"-artifact_prefix={tmp_path}/", str(work)],
                         capture_output=True, text=True, timeout=240)
    tail = "\n".join(res.stderr.splitlines()[-15:])
    assert res.returncode == 0, f"atheris found a crash:\n{tail}"
    assert "Done 100000 runs" in res.stderr, tail
