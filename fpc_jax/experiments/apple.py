"""The AppleRetrieval study (Wolczyk et al. 2023, Fig. 3): (M, c) x seeds as one vmapped call."""

from __future__ import annotations

import dataclasses
import itertools
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from fpc_jax.agents.reinforce import ReinforceHyper, ReinforceStatic, make_train
from fpc_jax.envs.apple_retrieval import AppleParams
from fpc_jax.experiments import config as cfglib
from fpc_jax.experiments import multihost, plotting, results, sharding

SUMMARY_COLUMNS = [
    "M",
    "c",
    "seed",
    "final_success",
    "phase2_success_pretrained",
    "phase2_success_min",
    "forgetting",
    "reach_phase2_early",
    "reach_phase2_prob_start",
    "dw1_early",
    "dw2_early",
    "w1_pre",
    "w2_pre",
    "w1_final",
    "w2_final",
]


@dataclasses.dataclass(frozen=True)
class AppleConfig:
    """Schema of ``configs/apple/*.yaml``. Fields marked sweep take a list (a grid axis)."""

    name: str = dataclasses.field(default="apple", metadata={"help": "experiment name"})
    M: tuple[int, ...] = dataclasses.field(
        default=(30,), metadata={"help": "apple distance (cells)", "sweep": True}
    )
    c: tuple[float, ...] = dataclasses.field(
        default=(0.5,), metadata={"help": "phase feature magnitude", "sweep": True}
    )
    T: int = dataclasses.field(default=100, metadata={"help": "time limit (steps)"})
    seeds: int = dataclasses.field(default=10, metadata={"help": "seeds per grid point"})
    seed: int = dataclasses.field(default=0, metadata={"help": "base PRNG seed"})
    lr: float = dataclasses.field(default=1e-3, metadata={"help": "SGD step size [U]"})
    gamma: float = dataclasses.field(default=1.0, metadata={"help": "discount [U]"})
    episodes_per_update: int = dataclasses.field(
        default=10, metadata={"help": "episodes per REINFORCE update [U]"}
    )
    use_baseline: bool = dataclasses.field(
        default=True, metadata={"help": "subtract the batch-mean return-to-go [U]"}
    )
    pretrain_updates: int = dataclasses.field(
        default=300, metadata={"help": "updates of Phase-2-only pre-training [U]"}
    )
    finetune_updates: int = dataclasses.field(
        default=400, metadata={"help": "updates of fine-tuning on the whole env [U]"}
    )
    eval_interval: int = dataclasses.field(
        default=5, metadata={"help": "updates between exact evaluations"}
    )
    early_updates: int = dataclasses.field(
        default=20, metadata={"help": "'early in fine-tuning' window (updates)"}
    )

    def validate(self) -> None:
        bad = []
        if any(m < 1 for m in self.M):
            bad.append(f"M must be >= 1 (got {list(self.M)})")
        if any(not (np.isfinite(c) and c > 0) for c in self.c):
            bad.append(f"c is a magnitude: each must be finite and > 0 (got {list(self.c)})")
        for k in ("T", "seeds", "episodes_per_update", "pretrain_updates", "eval_interval"):
            if getattr(self, k) < 1:
                bad.append(f"{k} must be >= 1 (got {getattr(self, k)})")
        if self.finetune_updates < 1 or self.finetune_updates % self.eval_interval:
            bad.append("finetune_updates must be a positive multiple of eval_interval")
        if self.early_updates % self.eval_interval or not (
            0 < self.early_updates <= self.finetune_updates
        ):
            bad.append("early_updates must be a multiple of eval_interval in (0, finetune_updates]")
        if not self.lr > 0:
            bad.append(f"lr must be > 0 (got {self.lr})")
        if not 0.0 <= self.gamma <= 1.0:
            bad.append(f"gamma must be in [0, 1] (got {self.gamma})")
        if bad:
            raise cfglib.ConfigError("invalid apple config: " + "; ".join(bad))

    @property
    def grid(self) -> list[tuple[int, float]]:
        return list(itertools.product(self.M, self.c))

    def static(self) -> ReinforceStatic:
        return ReinforceStatic(
            horizon=self.T,
            episodes_per_update=self.episodes_per_update,
            pretrain_updates=self.pretrain_updates,
            finetune_updates=self.finetune_updates,
            eval_interval=self.eval_interval,
            use_baseline=self.use_baseline,
            x_cap=x_cap_for(max(self.M)),
        )


def x_cap_for(max_m: int) -> int:
    """Static position bound for exact evaluation: a power of two >= 64, so most grids share it."""
    return max(64, 1 << int(np.ceil(np.log2(max_m + 2))))


_COMPILED: dict[ReinforceStatic, Any] = {}
_PROGRESS: list[Any] = []  # the active progress bar, if any (the compiled program calls into it)


def _progress(done: Any) -> None:
    if _PROGRESS:
        bar = _PROGRESS[-1]
        bar.update(int(done) - bar.n)


def compiled_sweep(static: ReinforceStatic):
    """The jitted ``vmap(train)`` for a static config (cached: a new grid reuses it)."""
    if static not in _COMPILED:
        train = make_train(static, progress=_progress)
        _COMPILED[static] = jax.jit(jax.vmap(train, in_axes=(0, 0, 0)))
    return _COMPILED[static]


def run_inputs(cfg: AppleConfig) -> tuple[ReinforceHyper, AppleParams, jax.Array]:
    """Flatten grid x seeds into one runs axis (grid-major). Seed s uses the same key at every
    grid point (common random numbers across the sweep)."""
    grid = cfg.grid
    n = len(grid) * cfg.seeds
    m = np.repeat([g[0] for g in grid], cfg.seeds).astype(np.int32)
    c = np.repeat([g[1] for g in grid], cfg.seeds).astype(np.float32)
    base = jax.random.key(cfg.seed)
    seed_keys = jax.vmap(lambda s: jax.random.fold_in(base, s))(jnp.arange(cfg.seeds))
    keys = jnp.tile(seed_keys, len(grid))
    params = AppleParams(
        c=jnp.asarray(c),
        M=jnp.asarray(m),
        T=jnp.full(n, cfg.T, jnp.int32),
        start_phase=jnp.ones(n, jnp.int32),
    )
    hyper = ReinforceHyper(
        lr=jnp.full(n, cfg.lr, jnp.float32),
        gamma=jnp.full(n, cfg.gamma, jnp.float32),
        w_init=jnp.zeros((n, 2), jnp.float32),
    )
    return hyper, params, keys


def run(cfg: AppleConfig, log=print, progress: bool = False) -> dict[str, np.ndarray]:
    """Run the whole grid x seeds in one compiled call; returns host arrays with leading
    axes (grid point, seed)."""
    hyper, params, keys = run_inputs(cfg)
    fn = compiled_sweep(cfg.static())
    n = keys.shape[0]
    hyper, params, keys = sharding.shard_runs(sharding.runs_mesh(n), (hyper, params, keys))
    t0 = time.perf_counter()
    log(f"[apple] compiling one program for {len(cfg.grid)} grid points x {cfg.seeds} seeds ...")
    lowered = fn.lower(hyper, params, keys)
    compiled = lowered.compile()
    t1 = time.perf_counter()
    log(
        f"[apple] compiled in {t1 - t0:.1f}s; running {n} runs "
        f"({cfg.pretrain_updates}+{cfg.finetune_updates} updates x "
        f"{cfg.episodes_per_update} episodes each) ..."
    )
    total = cfg.pretrain_updates + cfg.finetune_updates
    with tqdm.tqdm(total=total, unit="upd", desc="[apple] all runs", disable=not progress) as bar:
        _PROGRESS.append(bar)
        try:
            out = jax.block_until_ready(compiled(hyper, params, keys))
        finally:
            _PROGRESS.pop()
    t2 = time.perf_counter()
    out = multihost.fetch(out)
    log(f"[apple] ran in {t2 - t1:.1f}s")
    shape = (len(cfg.grid), cfg.seeds)
    host = {k: np.asarray(v).reshape(*shape, *v.shape[1:]) for k, v in out.items()}
    host["compile_seconds"] = np.float64(t1 - t0)
    host["run_seconds"] = np.float64(t2 - t1)
    return host


def summarize(cfg: AppleConfig, out: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """One row per (M, c, seed)."""
    k_early = cfg.early_updates // cfg.eval_interval
    n_early = cfg.early_updates
    reach, w_fin = out["update_batch_reach_phase2"], out["w_final"]
    rows = []
    for g, (m, c) in enumerate(cfg.grid):
        for s in range(cfg.seeds):
            ph2 = out["curve_success_phase2"][g, s]
            w = out["curve_w"][g, s]
            w_pre = out["w_pre"][g, s]
            pre, low = float(ph2[0]), float(ph2.min())
            rows.append(
                {
                    "M": int(m),
                    "c": float(c),
                    "seed": s,
                    "final_success": float(out["curve_success_full"][g, s, -1]),
                    "phase2_success_pretrained": pre,
                    "phase2_success_min": low,
                    "forgetting": max(0.0, pre - low),
                    "reach_phase2_early": float(reach[g, s, :n_early].mean()),
                    "reach_phase2_prob_start": float(out["curve_reach_phase2"][g, s, 0]),
                    "dw1_early": float(abs(w[k_early, 0] - w_pre[0])),
                    "dw2_early": float(abs(w[k_early, 1] - w_pre[1])),
                    "w1_pre": float(w_pre[0]),
                    "w2_pre": float(w_pre[1]),
                    "w1_final": float(w_fin[g, s, 0]),
                    "w2_final": float(w_fin[g, s, 1]),
                }
            )
    return rows


def plot(
    cfg: AppleConfig, out: dict[str, np.ndarray], rows: list[dict[str, Any]], path: Path
) -> None:
    """Figure-3-shaped panels: Phase-2 competence and full success over fine-tuning, one line per
    swept value; then forgetting / final success / early Phase-2 reach / early weight change
    against the swept value (mean and 90% CI over seeds)."""
    axis = "M" if len(cfg.M) >= len(cfg.c) else "c"
    other = "c" if axis == "M" else "M"
    fig, axes = plotting.figure(3, 2)
    x = out["eval_update"][0, 0]
    for g, (m, c) in enumerate(cfg.grid):
        label = (
            f"M={m}, c={c:g}"
            if len(cfg.M) > 1 and len(cfg.c) > 1
            else (f"M={m}" if axis == "M" else f"c={c:g}")
        )
        plotting.band(axes[0, 0], x, out["curve_success_phase2"][g], label)
        plotting.band(axes[0, 1], x, out["curve_success_full"][g], label)
        plotting.band(axes[0, 2], x, out["curve_reach_phase2"][g], label)
    axes[0, 0].set(
        title="Phase-2 competence (start at x=M)", xlabel="fine-tuning update", ylabel="P(success)"
    )
    axes[0, 1].set(
        title="Success on the whole env", xlabel="fine-tuning update", ylabel="P(success)"
    )
    axes[0, 2].set(
        title="P(reach Phase 2 in an episode)", xlabel="fine-tuning update", ylabel="probability"
    )
    axes[0, 0].legend(fontsize=7)
    for other_val in getattr(cfg, other):
        sel = [r for r in rows if r[other] == other_val]
        xs = sorted({r[axis] for r in sel})

        def metric(name, sel=sel, xs=xs):
            return np.array([[r[name] for r in sel if r[axis] == v] for v in xs])

        lab = f"{other}={other_val:g}"
        plotting.errorbars(axes[1, 0], xs, metric("forgetting"), f"forgetting, {lab}")
        plotting.errorbars(axes[1, 0], xs, metric("final_success"), f"final success, {lab}")
        plotting.errorbars(axes[1, 1], xs, metric("reach_phase2_early"), lab)
        plotting.errorbars(axes[1, 2], xs, metric("dw1_early"), f"|dw1| (shared), {lab}")
        plotting.errorbars(axes[1, 2], xs, metric("dw2_early"), f"|dw2| (phase), {lab}")
    axes[1, 0].set(title="Forgetting and final success", xlabel=axis, ylim=(-0.05, 1.05))
    axes[1, 1].set(
        title=f"Reached Phase 2, first {cfg.early_updates} updates",
        xlabel=axis,
        ylabel="fraction of episodes",
    )
    axes[1, 2].set(title=f"|w - w_pre| after {cfg.early_updates} updates", xlabel=axis)
    for ax in axes[1]:
        ax.legend(fontsize=7)
        if axis == "c":
            ax.set_xscale("log")
    seeds = plotting.seeds_label(cfg.seeds)
    fig.suptitle(f"AppleRetrieval: {cfg.name} ({seeds}, mean and 90% CI)")
    plotting.save(fig, path)


def main(cfg: AppleConfig, out_dir: str | Path, log=print) -> Path:
    """Run the sweep and write config.yaml, summary.csv, curves.npz, fig3.png, run_info.json."""
    if (Path(out_dir) / "summary.csv").exists():  # refuse before anything is written
        diff = cfglib.differing_fields(cfg, Path(out_dir) / "config.yaml")
        if diff:
            raise cfglib.ConfigError(
                f"{out_dir} holds the finished results of another apple config (differs in "
                f"{diff}); use another --out or delete it"
            )
    out = run(cfg, log=log, progress=multihost.is_main())  # an interrupt here writes nothing
    out_dir = results.make_run_dir(out_dir)
    cfglib.dump(cfg, out_dir / "config.yaml")
    rows = summarize(cfg, out)
    results.write_csv(out_dir / "summary.csv", rows, SUMMARY_COLUMNS)
    results.savez(
        out_dir / "curves.npz",
        compressed=True,
        grid_M=np.array([g[0] for g in cfg.grid]),
        grid_c=np.array([g[1] for g in cfg.grid]),
        **{k: v for k, v in out.items() if k.startswith(("curve_", "update_", "eval_", "w_"))},
    )
    plot(cfg, out, rows, out_dir / "fig3.png")
    results.write_json(
        out_dir / "run_info.json",
        {
            **results.environment_info(),
            "compile_seconds": float(out["compile_seconds"]),
            "run_seconds": float(out["run_seconds"]),
            "runs": len(rows),
        },
    )
    for line in table(cfg, rows):
        log(line)
    log(f"[apple] wrote {out_dir}/summary.csv, curves.npz, fig3.png")
    return out_dir


def table(cfg: AppleConfig, rows: list[dict[str, Any]]) -> list[str]:
    """Seed means per grid point, as printable lines."""
    lines = [f"{'M':>4} {'c':>6} {'forgetting':>10} {'final_succ':>10} {'reach_early':>11}"]
    for m, c in cfg.grid:
        sel = [r for r in rows if r["M"] == m and r["c"] == c]
        f, s, r = (
            np.mean([x[k] for x in sel])
            for k in ("forgetting", "final_success", "reach_phase2_early")
        )
        lines.append(f"{m:>4} {c:>6g} {f:>10.3f} {s:>10.3f} {r:>11.3f}")
    return lines
