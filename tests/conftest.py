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


def train_synthetic(folder: Path, n_frames: int, size: int, seed: int, overrides: dict) -> dict:
    """The synthetic subject written to ``folder/data`` and a ``tiny`` avatar trained on its
    exact tracking into ``folder/run``; returns ``train_and_export``'s outputs."""
    import torch

    from backend.synth.render import synthesize
    from backend.train.session import train_and_export

    torch.manual_seed(0)
    synthesize(str(folder / "data"), n_frames=n_frames, size=size, seed=seed, video=False)
    return train_and_export(str(folder / "data"), str(folder / "run"), "tiny", overrides)


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
