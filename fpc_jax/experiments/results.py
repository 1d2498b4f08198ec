"""Results on disk: run directories, CSV summaries, curve archives, and seed statistics.

Every file is written atomically (``integrity.write_atomic``: a temporary file renamed over the
target), so an interrupted run never leaves a half-written result."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import platform
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fpc_jax.experiments import integrity
from fpc_jax.experiments.multihost import main_only

Z90 = 1.6448536269514722  # two-sided 90% normal quantile


def make_run_dir(out: str | Path) -> Path:
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    return path


@main_only
def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Write ``rows`` with the given column order; floats keep 6 significant digits."""

    def fmt(v: Any) -> Any:
        if isinstance(v, float | np.floating):
            return f"{float(v):.6g}"
        if isinstance(v, np.integer):
            return int(v)
        return v

    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=list(columns))
    writer.writeheader()
    for row in rows:
        writer.writerow({k: fmt(row[k]) for k in columns})
    integrity.write_text(path, buf.getvalue())


@main_only
def savez(path: str | Path, compressed: bool = False, **arrays: Any) -> None:
    """``np.savez`` (or ``np.savez_compressed``) of ``arrays`` to ``path``, atomically."""
    save = np.savez_compressed if compressed else np.savez
    integrity.write_atomic(path, lambda f: save(f, **arrays))


def mean_ci90(x: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and 90% normal-approximation confidence interval of the mean over ``axis`` (seeds)."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=axis)
    n = x.shape[axis]
    sem = x.std(axis=axis, ddof=1) / np.sqrt(n) if n > 1 else np.zeros_like(mean)
    return mean, mean - Z90 * sem, mean + Z90 * sem


def environment_info() -> dict[str, Any]:
    """Device and library versions, for results and benchmarks."""
    import jax

    info: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "process_count": jax.process_count(),
        "device_kind": jax.devices()[0].device_kind,
    }
    try:
        import os

        info["cpu_count"] = os.cpu_count()
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        if names:
            info["cpu_model"] = names[0]
    except OSError:
        pass
    for mod in ("jaxlib", "flax", "optax", "numpy"):
        with contextlib.suppress(ImportError, AttributeError):
            info[mod] = __import__(mod).__version__
    return info


@main_only
def write_json(path: str | Path, data: Mapping[str, Any]) -> None:
    integrity.write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o)}")
