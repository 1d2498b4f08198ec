"""IQM, mean and the percentile stratified bootstrap CI of ``fpc-jax report`` (Agarwal et al.
2021, Sec. 4; rliable's ``StratifiedBootstrap`` written with numpy: docs/report.md)."""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np


class ReportError(ValueError):
    """A run dir or a request that cannot be reported; the message is one line for the CLI."""


def iqm(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """Interquartile mean: the mean of the runs left after cutting ``floor(n / 4)`` from each end
    (``scipy.stats.trim_mean(x, 0.25)``, as rliable's ``metrics.aggregate_iqm``)."""
    x = np.sort(np.asarray(x, np.float64), axis=axis)
    n = x.shape[axis]
    cut = n // 4
    return np.take(x, np.arange(cut, n - cut), axis=axis).mean(axis=axis)


def mean(x: np.ndarray, axis: int = 0) -> np.ndarray:
    return np.mean(np.asarray(x, np.float64), axis=axis)


def bootstrap_ci(
    scores: np.ndarray,
    statistic: Callable[..., np.ndarray],
    reps: int = 2000,
    seed: int = 0,
    size: float = 0.90,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point estimate and percentile bootstrap CI of ``statistic`` over runs. ``scores`` is
    (runs, tasks): runs are resampled with replacement within each task (stratum) independently,
    as rliable's ``StratifiedBootstrap``; with ``statistic(x, axis=0)`` per task the result has
    shape (tasks,). A 1-D ``scores`` is one task. Deterministic given ``seed``."""
    x = np.asarray(scores, np.float64)
    one = x.ndim == 1
    x = x[:, None] if one else x
    n, k = x.shape
    if n == 0:
        raise ReportError("bootstrap of an empty sample")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(reps, n, k))
    boot = statistic(np.take_along_axis(x[None], idx, axis=1), axis=1)  # (reps, tasks)
    alpha = 100 * (1 - size) / 2
    lo, hi = np.percentile(boot, [alpha, 100 - alpha], axis=0)
    point = statistic(x, axis=0)
    return (point[0], lo[0], hi[0]) if one else (point, lo, hi)


def _seed(seed: int, *names: str) -> list[int]:
    """A stream per (method, metric): adding a method leaves the others' CIs unchanged."""
    return [seed, *(zlib.crc32(n.encode()) for n in names)]
