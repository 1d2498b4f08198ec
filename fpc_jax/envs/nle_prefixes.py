"""Stored bot games for NetHack's Far starts (``PrefixSet``): seeds + action prefixes, replayed
to the first step on a deeper Dlvl (no save states); built by scripts/build_nethack_prefixes.py
and shipped as the asset ``fpc_jax/assets/nethack_prefixes``. Design: docs/nethack.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from fpc_jax.envs import nle_nethack as nh

ASSET = "nethack_prefixes"


def screen_hash(raw: dict[str, np.ndarray]) -> str:
    """sha1 of the terminal (24 x 80 chars): what "the same screen" means in the replay checks."""
    return hashlib.sha1(np.ascontiguousarray(raw["tty_chars"]).tobytes()).hexdigest()


@dataclasses.dataclass(frozen=True)
class PrefixSet:
    """Stored bot games for Far starts: ``seeds`` int64 [N, 2] (core, disp), ``actions`` (uint8 per
    game), ``first_step[d]`` int [N] (actions to the first step on Dlvl >= d, -1: never),
    ``screens[d]`` (sha1 of the screen there) and the build metadata."""

    seeds: np.ndarray
    actions: tuple[np.ndarray, ...]
    first_step: dict[int, np.ndarray]
    screens: dict[int, list[str]]
    meta: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path | None = None) -> PrefixSet:
        root = Path(path) if path else Path(str(resources.files("fpc_jax") / "assets" / ASSET))
        if not (root / "meta.json").is_file() or not (root / "actions.npz").is_file():
            raise FileNotFoundError(
                f"no NetHack prefix asset at {root} (meta.json + actions.npz); build one with "
                "python scripts/build_nethack_prefixes.py --out DIR"
            )
        meta = json.loads((root / "meta.json").read_text())
        if tuple(meta["action_names"]) != nh.ACTION_NAMES or meta["character"] not in nh.CHARACTERS:
            raise ValueError(f"prefix asset {root} was built for another action set or character")
        z = np.load(root / "actions.npz")
        actions = tuple(np.split(z["actions"], z["offsets"][1:-1]))
        first = {int(d): np.asarray(v) for d, v in meta["first_step"].items()}
        screens = {int(d): v for d, v in meta["screens"].items()}
        return cls(np.asarray(meta["seeds"], np.int64), actions, first, screens, meta)

    def save(self, path: str | Path, **meta: Any) -> None:
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        offsets = np.cumsum([0, *(len(a) for a in self.actions)])
        np.savez_compressed(
            root / "actions.npz", actions=np.concatenate(self.actions), offsets=offsets
        )
        doc = {
            **self.meta,
            **meta,
            "action_names": list(nh.ACTION_NAMES),
            "seeds": self.seeds.tolist(),
            "first_step": {str(d): v.tolist() for d, v in self.first_step.items()},
            "screens": {str(d): v for d, v in self.screens.items()},
        }
        (root / "meta.json").write_text(json.dumps(doc, indent=1) + "\n")

    def reaching(self, depth: int) -> np.ndarray:
        """Entries whose game reached Dlvl >= ``depth``; raises if none."""
        steps = self.first_step.get(int(depth))
        if steps is None or not (steps >= 0).any():
            have = {d: int((v >= 0).sum()) for d, v in self.first_step.items()}
            raise ValueError(f"no stored prefix reaches Dlvl {depth}; entries per Dlvl: {have}")
        return np.flatnonzero(steps >= 0)

    def start(self, game: nh.NetHackGame, entry: int, depth: int, verify: bool = False) -> Any:
        """Replay entry ``entry`` to its first step on Dlvl >= ``depth``, then hand over: the
        game's step counter restarts and ``start_depth`` is the Dlvl reached."""
        n = int(self.first_step[int(depth)][entry])
        core, disp = (int(s) for s in self.seeds[entry])
        obs = game.replay(core, disp, self.actions[entry][:n])
        if game.depth < depth or (verify and screen_hash(game.raw) != self.screens[depth][entry]):
            raise RuntimeError(
                f"prefix {entry} (seeds {core}, {disp}) did not reproduce Dlvl {depth} (got "
                f"{game.depth}): built with another NLE ({self.meta.get('nle')}); rebuild it "
                "with scripts/build_nethack_prefixes.py"
            )
        game.start_depth, game.steps, game.actions, game.max_depth = game.depth, 0, [], game.depth
        return obs
