"""The Makefile: `make help` lists every target, the targets whose output is the product
print nothing else, and a bad PROFILE is refused before anything is written."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAKEFILE = REPO / "Makefile"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _make(*args: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    """``make -f Makefile ARGS`` in ``cwd``, with this interpreter as the project's Python
    and the install step taken as done (``-o``: never remake the stamp)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    cmd = ["make", "--no-print-directory", "-f", str(MAKEFILE), "-o", ".venv/.installed"]
    cmd += [f"PY={sys.executable}", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, **kw)


def test_make_help_lists_every_target():
    text = MAKEFILE.read_text()
    phony = re.search(r"^\.PHONY:(.*)$", text, re.M).group(1).split()
    documented = dict(re.findall(r"^([a-z-]+):.*## (.*)$", text, re.M))
    assert set(phony) == set(documented), "every target has a `## what it does` comment"
    res = _make("help", cwd=REPO)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == len(phony)
    for target, words in documented.items():
        assert any(line.split(None, 1) == [target, words] for line in lines), target


@pytest.mark.parametrize("target", ["report", "list", "dry-run", "help"])
def test_make_prints_only_the_output_of_its_command(target, tmp_path):
    """`make report > file` holds the report, not make's echo of the command too."""
    res = _make(target, "PY=echo", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    if target != "help":
        assert res.stdout.count("\n") == 1 and res.stdout.startswith("-m "), res.stdout


def test_make_reproduce_refuses_a_bad_profile_before_writing(tmp_path):
    res = _make("reproduce", "PROFILE=bogus", cwd=tmp_path)
    assert res.returncode != 0
    assert "unknown profile 'bogus' for --profile" in res.stderr
    assert list(tmp_path.iterdir()) == []
