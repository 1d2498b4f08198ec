"""Build the NetHack Far-start asset: the rule-based bot's action prefixes from fixed seeds up to
its first step on each Dlvl in --depths, each checked by replay in a fresh game (same Dlvl, same
screen). docs/nethack.md describes the asset; the packaged one was built with the defaults:

    python scripts/build_nethack_prefixes.py --out fpc_jax/assets/nethack_prefixes
    python scripts/build_nethack_prefixes.py --report 20   # the bot's numbers in docs/nethack.md
"""

from __future__ import annotations

import argparse
import collections
import importlib.metadata
import json
import sys
import time

import numpy as np

from fpc_jax.envs import nle_nethack as nh
from fpc_jax.envs.nle_bot import NetHackBot, play_bot
from fpc_jax.envs.nle_prefixes import PrefixSet, screen_hash


def build(
    num_seeds: int, first_seed: int, depths: list[int], max_steps: int
) -> tuple[PrefixSet, dict]:
    game, check, bot = nh.NetHackGame(), nh.NetHackGame(), NetHackBot()
    seeds, actions, screens = [], [], {d: [] for d in depths}
    first = {d: [] for d in depths}
    deepest, t0, steps = collections.Counter(), time.perf_counter(), 0
    for i in range(num_seeds):
        core, disp = first_seed + i, 10**6 + first_seed + i
        run = play_bot(game, core, disp, max_steps=max_steps, stop_depth=max(depths), bot=bot)
        steps += run["steps"]
        reached = {
            d: next((n for k, n in sorted(run["first_step"].items()) if k >= d), -1) for d in depths
        }
        keep = max(reached.values())
        deepest[run["max_depth"]] += 1
        for d in depths:
            n = reached[d]
            if n >= 0:
                check.replay(core, disp, run["actions"][:n])
                if check.depth < d:
                    raise RuntimeError(f"seed {core}: replay reached Dlvl {check.depth}, not {d}")
            screens[d].append(screen_hash(check.raw) if n >= 0 else "")
            first[d].append(n)
        seeds.append((core, disp))
        actions.append(run["actions"][: max(keep, 0)])
        print(
            f"seed {core}: first step on Dlvl>=d {reached}, bot steps {run['steps']}",
            file=sys.stderr,
        )
    secs = time.perf_counter() - t0
    stats = {
        "bot_steps": steps,
        "seconds": round(secs, 1),
        "bot_steps_per_s": round(steps / secs),
        "bot_stop_depth_hist": dict(sorted(deepest.items())),
    }
    prefixes = PrefixSet(
        seeds=np.array(seeds, np.int64),
        actions=tuple(actions),
        first_step={d: np.array(v) for d, v in first.items()},
        screens=screens,
        meta={},
    )
    game.close()
    check.close()
    return prefixes, stats


def report(num_seeds: int, first_seed: int, max_steps: int) -> dict:
    """Whole bot games (to death or ``max_steps``): deepest-Dlvl histogram, score, length."""
    game, bot, runs = nh.NetHackGame(nh.NetHackConfig(max_steps=max_steps)), NetHackBot(), []
    t0 = time.perf_counter()
    for i in range(num_seeds):
        runs.append(play_bot(game, first_seed + i, 10**6 + first_seed + i, max_steps, bot=bot))
    secs = time.perf_counter() - t0
    game.close()
    col = {
        k: np.array([r[k] for r in runs]) for k in ("max_depth", "score", "steps", "turn", "died")
    }
    reach = {
        d: [min((n for k, n in r["first_step"].items() if k >= d), default=-1) for r in runs]
        for d in (2, 3)
    }
    hist = collections.Counter(col["max_depth"].tolist())
    return {
        "seeds": f"core {first_seed}..{first_seed + num_seeds - 1}, disp = core + 1e6",
        "max_steps": max_steps,
        "max_depth_hist": dict(sorted(hist.items())),
        **{f"reach_dlvl{d}": float(np.mean(np.array(v) >= 0)) for d, v in reach.items()},
        **{
            f"median_steps_to_dlvl{d}": float(np.median([n for n in v if n >= 0]))
            for d, v in reach.items()
        },
        "score_mean": float(col["score"].mean()),
        "score_median": float(np.median(col["score"])),
        "steps_mean": float(col["steps"].mean()),
        "turns_mean": float(col["turn"].mean()),
        "died": float(col["died"].mean()),
        "bot_steps_per_s": round(col["steps"].sum() / secs),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="asset directory (meta.json + actions.npz)")
    p.add_argument("--report", type=int, metavar="N", help="only measure N whole bot games")
    p.add_argument("--seeds", type=int, default=64, help="number of games (core seeds)")
    p.add_argument("--first-seed", type=int, default=1, help="core seed of game 0 (disp = 1e6+)")
    p.add_argument("--depths", type=int, nargs="+", default=[2, 3], help="Far Dlvls to store")
    p.add_argument("--max-steps", type=int, default=5000, help="bot step cap per game")
    args = p.parse_args()
    if args.report:
        print(json.dumps(report(args.report, args.first_seed, args.max_steps), indent=1))
        return
    if not args.out:
        p.error("--out is required (or --report N)")
    if min(args.depths) < 2:
        p.error("--depths must be >= 2 (Dlvl 1 is Close)")
    prefixes, stats = build(args.seeds, args.first_seed, sorted(args.depths), args.max_steps)
    counts = {str(d): int((v >= 0).sum()) for d, v in prefixes.first_step.items()}
    prefixes.save(
        args.out,
        nle=importlib.metadata.version("nle"),
        character=nh.CHARACTERS[0],
        command="python scripts/build_nethack_prefixes.py " + " ".join(sys.argv[1:]),
        max_steps=args.max_steps,
        entries_reaching=counts,
        build=stats,
    )
    print({"entries_reaching": counts, **stats})


if __name__ == "__main__":
    main()
