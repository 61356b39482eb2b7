"""Run the test suite and record its count and wall time: ``make test-time``.

Writes ``docs/test_time.json`` (or the path given): ``tests`` (the cases pytest ran,
skipped ones included), ``skipped``, ``wall_s``, ``cpu_count`` and ``date``. The README's
test count is generated from it (``python -m benchmark report --readme README.md``), and a
test fails when the count differs from what pytest collects. Nothing is written unless the
suite passes. Run it on an otherwise idle machine: the time is what the README states.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from benchmark.report import COUNTING_RUN

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else REPO / "docs" / "test_time.json"
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        t0 = time.perf_counter()
        rc = subprocess.call(
            [
                sys.executable,
                "-m",
                "pytest",
                *os.environ.get("PYTEST_FLAGS", "-q").split(),  # `make test`'s, from make
                "-p",
                "no:cacheprovider",
                f"--junitxml={report}",
            ],
            cwd=REPO,
            # The count test compares the recorded count with the collected one; this run
            # records it, so the test is skipped here (and counted).
            env={**os.environ, COUNTING_RUN: "1"},
        )
        wall = time.perf_counter() - t0
        root = ET.parse(report).getroot() if report.exists() else None
    suite = root[0] if root is not None and root.tag == "testsuites" else root
    if rc != 0 or suite is None or int(suite.get("failures", 0)) or int(suite.get("errors", 0)):
        print(f"the suite did not pass (pytest exit status {rc}); {out} is unchanged",
              file=sys.stderr)  # fmt: skip
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    record = {
        "tests": int(suite.get("tests")),
        "skipped": int(suite.get("skipped", 0)) - 1,  # the count test, skipped in this run
        "wall_s": round(wall, 1),
        "cpu_count": cores,
        "date": datetime.date.today().isoformat(),
    }
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"{out}: {record['tests']} tests in {wall / 60:.1f} min on {cores} CPU cores")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
