"""The benchmark harness: compile time apart from steady state, results blocked on, the machine
recorded by one helper. Every throughput script in benchmarks/ times through it."""

from __future__ import annotations

import datetime
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax


def environment() -> dict[str, Any]:
    """Device, platform, library versions, CPU and date of this process."""
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
    return {
        "device": str(jax.devices()[0]),
        "device_kind": jax.devices()[0].device_kind,
        "device_count": jax.device_count(),
        "platform": jax.default_backend(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "versions": {
            "jax": jax.__version__,
            "jaxlib": jaxlib.__version__,
            "flax": flax.__version__,
            "optax": optax.__version__,
            "python": platform.python_version(),
        },
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def block(tree: Any) -> Any:
    """Wait for every array of ``tree`` (a no-op on non-arrays)."""
    return jax.tree.map(lambda x: x.block_until_ready() if hasattr(x, "block_until_ready") else x,
                        tree)  # fmt: skip


def timed(fn: Callable[..., Any], *args: Any, repeats: int = 3) -> dict[str, float]:
    """``first_call_s`` (trace + compile + one run) and ``steady_s`` (best of ``repeats`` further
    calls, each blocked on) of ``fn(*args)``; ``fn`` must not donate its arguments."""
    t0 = time.perf_counter()
    block(fn(*args))
    first = time.perf_counter() - t0
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        block(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return {"first_call_s": first, "compile_s": max(first - best, 0.0), "steady_s": best}


def write(path: str | Path, result: dict[str, Any]) -> Path:
    """Write ``result`` with the environment as JSON (repo-relative paths only, by the caller)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"environment": environment(), **result}, indent=2) + "\n")
    return path
