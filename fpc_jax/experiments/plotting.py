"""Plot helpers shared by experiments: mean curves with 90% bands over seeds."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes

from fpc_jax.experiments import integrity
from fpc_jax.experiments.multihost import is_main
from fpc_jax.experiments.results import mean_ci90


def band(ax: Axes, x: np.ndarray, ys: np.ndarray, label: str, color=None) -> None:
    """Plot the seed mean of ``ys`` (seeds, len(x)) with its 90% confidence band."""
    mean, lo, hi = mean_ci90(ys, axis=0)
    (line,) = ax.plot(x, mean, label=label, color=color)
    ax.fill_between(x, lo, hi, alpha=0.2, color=line.get_color(), linewidth=0)


def errorbars(ax: Axes, x: np.ndarray, ys: np.ndarray, label: str, color=None) -> None:
    """Seed mean with 90% CI error bars at each x; ``ys`` is (len(x), seeds)."""
    stats = [mean_ci90(y) for y in ys]
    mean = np.array([s[0] for s in stats])
    err = np.array([[s[0] - s[1], s[2] - s[0]] for s in stats]).T
    ax.errorbar(x, mean, yerr=err, marker="o", capsize=3, label=label, color=color)


def save(fig, path) -> None:
    """Write ``fig`` (process 0 of a multi-process run) and close it."""
    if is_main():
        fig.tight_layout()
        integrity.write_atomic(path, lambda f: fig.savefig(f, dpi=110, format="png"))
    plt.close(fig)


def seeds_label(n: int) -> str:
    """``"1 seed"``, ``"3 seeds"``."""
    return f"{n} seed" if n == 1 else f"{n} seeds"


def figure(ncols: int, nrows: int = 1, width: float = 4.0, height: float = 3.2):
    return plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
