"""Worker process set-up: pinned thread pools and a heap that is kept between clips."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from soundstage import worker

# What a worker does per clip: the features of a 30 s clip, whose temporaries (spectra, frames,
# outputs) are allocated and freed every time; report the page faults of the last calls. With
# glibc's defaults part of them is served by mmap and returned on free, so they fault in afresh.
_CHURN = """
import json, resource, sys
from soundstage import worker
accepted = worker.keep_heap() if sys.argv[1] == "keep" else None
import numpy as np
from soundstage.features_core import extract
y = (0.1 * np.random.default_rng(0).standard_normal(30 * 22050)).astype(np.float32)
for _ in range(2):
    extract(y, sr=22050)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    extract(y, sr=22050)
print(json.dumps({"accepted": accepted, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _churn(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", _CHURN, mode], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_keep_heap_stops_page_fault_churn() -> None:
    default, kept = _churn("default"), _churn("keep")
    assert kept["accepted"] is True
    assert default["faults"] > 4 * 200  # hundreds of pages faulted in again per clip
    assert kept["faults"] < default["faults"] / 10  # the same pages, reused


def test_pin_threads_defaults_to_one_and_keeps_explicit_values(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in worker.THREAD_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    worker.pin_threads()
    assert os.environ["OMP_NUM_THREADS"] == "3"
    assert all(os.environ[v] == "1" for v in worker.THREAD_VARS if v != "OMP_NUM_THREADS")


def test_cli_sets_up_workers_before_numpy() -> None:
    code = ("import os, sys; import soundstage.cli; "
            "print(os.environ['OPENBLAS_NUM_THREADS'], 'numpy' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k not in worker.THREAD_VARS}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["1", "False"]  # pinned, and numpy not yet loaded by the CLI module
