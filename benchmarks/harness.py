"""The benchmark harness: compile time apart from steady state, results blocked on, the machine
recorded by one helper. Every throughput script in benchmarks/ times through it."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np


def environment(packages: Sequence[str] = ()) -> dict[str, Any]:
    """Device, platform, library versions, CPU and date of this process; ``packages`` adds the
    installed versions of more distributions (None where one is absent)."""
    import flax
    import jaxlib
    import optax

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "python": platform.python_version(),
    }
    for dist in packages:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "device": str(jax.devices()[0]),
        "device_kind": jax.devices()[0].device_kind,
        "device_count": jax.device_count(),
        "platform": jax.default_backend(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "versions": versions,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def block(tree: Any) -> Any:
    """Wait for every array of ``tree`` (a no-op on non-arrays)."""
    return jax.tree.map(
        lambda x: x.block_until_ready() if hasattr(x, "block_until_ready") else x, tree
    )


def clocked(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``(fn(*args, **kwargs), seconds)`` of one call, its output blocked on (for calls that
    thread state, which ``timed`` cannot repeat)."""
    t0 = time.perf_counter()
    out = block(fn(*args, **kwargs))
    return out, time.perf_counter() - t0


def timed(fn: Callable[..., Any], *args: Any, repeats: int = 3) -> dict[str, float]:
    """``first_call_s`` (trace + compile + one run) and ``steady_s`` (best of ``repeats`` further
    calls, each blocked on) of ``fn(*args)``; ``fn`` must not donate its arguments."""
    _, first = clocked(fn, *args)
    best = min(clocked(fn, *args)[1] for _ in range(repeats))
    return {"first_call_s": first, "compile_s": max(first - best, 0.0), "steady_s": best}


def write(path: str | Path, result: dict[str, Any], key: str | None = "environment") -> Path:
    """Write ``result`` with ``environment()`` as JSON: under ``key`` (unless ``result`` has one,
    e.g. a resumed record), or merged into the top level with ``key=None``. NumPy values become
    plain JSON; paths in ``result`` are the caller's to make repo-relative."""
    if key is None:
        result = {**environment(), **result}
    elif key not in result:
        result = {key: environment(), **result}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=_plain) + "\n")
    return path


def _plain(o: Any) -> Any:
    if isinstance(o, np.ndarray | jax.Array):
        return np.asarray(o).tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o)}")
