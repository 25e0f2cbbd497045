"""The benchmark protocol: ``python -m backend bench <name>`` prints one JSON object per line::

    {"bench": name, "case": "50k@256", "metric": "forward", "value": 0.42, "unit": "s",
     "device": "cpu (2 cores)"}

Benches are registered in ``BENCHES`` as ``name -> (module, function, help)``; the function takes
the parsed arguments and yields ``BenchRecord`` objects. Modules are imported only when that bench
runs, so listing benches needs neither torch nor a GPU.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import IO

UNITS = ("s", "ms", "fps", "px", "deg", "mm",   # time and speed; accuracy (bench track-accuracy)
         "dB", "ratio", "%")                    # image quality and coverage (bench quality)

# name -> (module relative to the ``backend`` package, function name, one-line help)
BENCHES: dict[str, tuple[str, str, str]] = {
    "formats": (".bench.formats", "run", "write and read a 70k x 50 avatar file (s, MB)"),
    "animate": (".export.bench", "run", "blend+skin (and +render) of 10k/70k Gaussians, K=50 (fps)"),
    "head-model": (".headmodel.bench", "run", "head-model forward for a batch of 256 on CPU (ms)"),
    "raster": (".render.bench", "run", "render a head-sized cloud, forward and backward (s)"),
    "stylize": (".stylize.bench", "run", "built-in styles on a 512 x 512 face video (fps)"),
    "track": (".pipeline.bench_tracking", "run",
              "prepare end to end at 512, plus landmarks and fit alone (fps)"),
    "quality": (".pipeline.bench_quality", "run",
                "avatars from real clips and the synthetic subject: head-region PSNR/SSIM, "
                "coverage at +-45 deg, stage seconds"),
    "track-accuracy": (".pipeline.bench_tracking", "run_accuracy",
                       "prepare on the rendered synthetic subject against its truth (px, deg, mm)"),
}


@dataclass
class BenchRecord:
    bench: str
    case: str
    metric: str
    value: float
    unit: str
    device: str

    def __post_init__(self):
        if self.unit not in UNITS:
            raise ValueError(f"bench unit must be one of {UNITS}, got {self.unit!r}")
        self.value = float(self.value)

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def emit(record: BenchRecord, out: IO[str]) -> None:
    out.write(record.to_json() + "\n")
    out.flush()


def cpu_device_name() -> str:
    """A short description of this CPU, e.g. ``cpu (2 cores, x86_64)``."""
    return f"cpu ({os.cpu_count()} cores, {platform.machine()})"


def best_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Minimum wall time of ``fn()`` in seconds over ``repeats`` runs, after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)
