"""The scripted performance of the synthetic subject: expressions, jaw, head rotation and gaze.

Training frames show each expression alone or in fixed pairs; the held-out tail (the trainer's
test split: the last 10% of a short video) shows combinations of three or four expressions at
once, which the training part never shows. Deterministic from the seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SEGMENT = 12  # frames per expression segment


@dataclass
class Performance:
    expressions: np.ndarray      # (T, K)
    joint_rotations: np.ndarray  # (T, 5, 3) axis-angle, [root, neck, jaw, eye_L, eye_R]
    n_test: int                  # the last n_test frames are the held-out part
    test_combinations: list      # the expression sets of the held-out part


def _envelope(length: int) -> np.ndarray:
    """0 -> 1 -> 0 over a segment (sin^2), so coefficients change smoothly."""
    return np.sin(np.linspace(0, math.pi, length)) ** 2


def _smooth_noise(rng: np.random.Generator, n: int, amplitude: float, periods=(90, 37, 23)) -> np.ndarray:
    t = np.arange(n)
    value = np.zeros(n)
    for period in periods:
        value += np.sin(2 * math.pi * t / period + rng.uniform(0, 2 * math.pi)) / len(periods)
    return amplitude * value


def make_performance(n_frames: int, n_expressions: int, seed: int = 0) -> Performance:
    """A deterministic performance of ``n_frames`` frames for ``n_expressions`` expressions."""
    rng = np.random.default_rng(seed)
    n_test = max(1, math.ceil(0.1 * n_frames))
    n_train = n_frames - n_test
    k = n_expressions
    expressions = np.zeros((n_frames, k))
    pairs = [(i,) for i in range(k)] + [(i, (i + 1) % k) for i in range(0, k, 2)]
    order = rng.permutation(len(pairs))
    start, slot = 0, 0
    while start < n_train:
        length = min(SEGMENT, n_train - start)
        chosen = pairs[order[slot % len(pairs)]]
        for index in chosen:
            expressions[start:start + length, index] = rng.uniform(0.6, 1.0) * _envelope(length)
        start += length
        slot += 1
    combos = []
    start = n_train
    while start < n_frames:
        length = min(SEGMENT, n_frames - start)
        chosen = tuple(sorted(rng.choice(k, size=min(k, int(rng.integers(3, 5))), replace=False).tolist()))
        combos.append(chosen)
        for index in chosen:
            expressions[start:start + length, index] = rng.uniform(0.4, 0.8) * _envelope(length)
        start += length
    rotations = np.zeros((n_frames, 5, 3))
    rotations[:, 0, 1] = _smooth_noise(rng, n_frames, 0.35)          # head yaw
    rotations[:, 0, 0] = _smooth_noise(rng, n_frames, 0.15, (71, 29))  # head pitch
    rotations[:, 0, 2] = _smooth_noise(rng, n_frames, 0.08, (53,))     # head roll
    jaw = np.clip(_smooth_noise(rng, n_frames, 0.5, (41, 17)), 0, None)
    rotations[:, 2, 0] = np.minimum(jaw, 0.3)                          # jaw opening
    gaze = np.stack([_smooth_noise(rng, n_frames, 0.18, (47, 19)),
                     _smooth_noise(rng, n_frames, 0.25, (61, 27))], axis=1)
    rotations[:, 3, :2] = gaze
    rotations[:, 4, :2] = gaze
    return Performance(expressions.astype(np.float32), rotations.astype(np.float32), n_test, combos)
