"""Far-stage success of every run of several Meta-World sweeps, one line per run (not a mean).

    python docs/results/robotic_sequence_cpu/plot_far_runs.py OUT.png SWEEP_DIR[=SEED_NAME] ...

Each SWEEP_DIR holds an ``fpc-jax sweep`` output (sweep_curves.npz, run_info.json, config.yaml);
the optional ``=NAME`` (its config seed) is accepted for the record; the legend has one entry per
condition (method, and whether the Close critic heads started at zero).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import yaml


def main(out: str, sweeps: list[str]) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8), sharey=True)
    colors = {"ft": "tab:red", "bc": "tab:blue"}
    for item in sweeps:
        path = item.partition("=")[0]
        d = Path(path)
        cfg = yaml.safe_load((d / "config.yaml").read_text())
        labels = json.loads((d / "run_info.json").read_text())["labels"]
        s = np.load(d / "sweep_curves.npz")["eval/stage_success"]  # (evals, runs, stages)
        x = np.arange(s.shape[0]) * cfg["steps_per_chunk"] / 1000
        far = [cfg["tasks"].index(t) for t in cfg["far_tasks"]]
        zero_q = cfg.get("new_critic_heads", "random") == "zero"
        style = {"ls": "--" if zero_q else "-", "alpha": 0.7, "marker": "."}
        for r, (method, _seed) in enumerate(labels):
            c = "tab:green" if ":" in method else colors.get(method, "tab:gray")
            c = "tab:purple" if zero_q and method == "bc" else c
            tag = f"{method}{' zero-Q' if zero_q else ''}"  # one legend entry per condition
            for ax, k in zip(axes[:2], far, strict=True):
                ax.plot(x, s[:, r, k], color=c, label=tag, **style)
            axes[2].plot(x, s[:, r, 0], color=c, label=tag, **style)
    titles = [*(f"{t} alone [Far]" for t in cfg["far_tasks"]), f"{cfg['tasks'][0]} alone [Close]"]
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title)
        ax.set_xlabel("env steps (k)")
        ax.set_ylim(-0.05, 1.05)
    axes[0].set_ylabel("success (10 deterministic episodes)")
    handles, tags = axes[2].get_legend_handles_labels()
    first = {t: h for h, t in zip(handles, tags, strict=True)}
    axes[2].legend(first.values(), first.keys(), fontsize=8, loc="upper left")
    fig.suptitle(
        "Real Meta-World (CPU), every run one line: FT red, BC blue, BC x10 green; "
        "dashed (BC purple): Close critic heads at zero"
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
