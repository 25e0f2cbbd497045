"""Shared test fixtures. Tests make their own inputs in tmp_path; nothing is downloaded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_backend(*args: str, cwd: Path = REPO, env: dict | None = None,
                timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m backend ARGS`` in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "backend", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture(scope="module")
def torch_single_thread():
    """One torch thread: at tiny training sizes, two threads on a busy 2-core machine made
    training 3-4x slower (thread hand-offs), and one thread is as fast when the machine is idle."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
