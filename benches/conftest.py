"""Fixtures of the benchmark harness, and the run's context stored in the pytest-benchmark JSON for the report.

The benches are not part of `make test`: pytest's `testpaths` is `tests`, so a bare `pytest` never collects
this folder; `make bench` names it.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
# Scratch files go next to the repository, on its filesystem (not /tmp, which may be tmpfs): the page cache
# is warm, but writes and fsyncs hit the same disk a user's conversations would.
SCRATCH = REPO / "bench-results" / "scratch"


@pytest.fixture
def bench_dir() -> Iterator[Path]:
    """An empty folder for one bench, removed afterwards (sharegpt-many leaves 17,671 files)."""
    SCRATCH.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(dir=SCRATCH))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def pytest_benchmark_update_json(config: Any, benchmarks: Any, output_json: dict[str, Any]) -> None:
    """What `benches/report.py` prints above the table: the machine and the exact command."""
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    output_json["bench_context"] = {
        "nproc": nproc,
        "cpu_model": _cpu_model(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "command": " ".join(["python", "-m", "pytest", *config.invocation_params.args]),
        "scratch_dir": str(SCRATCH),
    }
