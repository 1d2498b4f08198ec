"""Host-side NetHack (NLE 1.3.0): a seeded Human Monk game with a reduced action set, a glyph crop
plus normalised bottom-line stats, Far starts replayed from stored bot prefixes, a worker pool.
Design and measurements: docs/nethack.md. nle is imported lazily (the registry entry loads without).
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from typing import Any

import numpy as np

CHARACTERS: tuple[str, ...] = ("mon-hum-neu-mal",)  # what the bot and action set support

MOVE_KEYS = "kljhunby"  # N E S W NE SE SW NW (nle.nethack.CompassDirection order)
MOVE_DELTAS = ((0, -1), (1, 0), (0, 1), (-1, 0), (1, -1), (1, 1), (-1, 1), (-1, -1))
"""(dx, dy) of the 8 move actions, y pointing down the screen."""
ACTION_NAMES: tuple[str, ...] = (
    "move_n",
    "move_e",
    "move_s",
    "move_w",
    "move_ne",
    "move_se",
    "move_sw",
    "move_nw",
    "down",
    "search",
    "eat",
    "pray",
    "kick",
    "more",
    "esc",
)
DOWN, SEARCH, EAT, PRAY, KICK, MORE, ESC = range(8, 15)
NUM_ACTIONS = len(ACTION_NAMES)
ACTION_KEYS: tuple[int, ...] = (
    *(ord(c) for c in MOVE_KEYS),
    ord(">"),
    ord("s"),
    ord("e"),
    0x80 | ord("p"),
    0x04,
    0x0D,
    0x1B,
)
"""NetHack key of each action (EAT and PRAY are macros that start with these keys)."""

GLYPH_CLASSES: tuple[str, ...] = (
    "pad",
    "unknown",
    "wall",
    "floor",
    "corridor",
    "doorway",
    "door_closed",
    "stairs_down",
    "stairs_up",
    "feature",
    "hazard",
    "trap",
    "monster",
    "pet",
    "food",
    "object",
    "boulder",
    "self",
)
NUM_GLYPH_CLASSES = len(GLYPH_CLASSES)
STAT_NAMES: tuple[str, ...] = (
    "hp_frac",
    "maxhp",
    "depth",
    "xlevel",
    "energy_frac",
    "ac",
    "hungry",
    "weak",
    "turn_log",
    "encumbrance",
    "prompt_more",
    "prompt_yn",
    "prompt_getlin",
    "stairs_seen",
    "on_stairs",
    "stairs_dx",
    "stairs_dy",
    "x",
    "y",
)
NUM_STATS = len(STAT_NAMES)
OBS_MODES = ("dict", "flat")
STARTS = ("close", "far")
RAW_KEYS = (
    "glyphs",
    "blstats",
    "message",
    "internal",
    "inv_letters",
    "inv_oclasses",
    "inv_strs",
    "tty_chars",
)
ROWS, COLS = 21, 79
PAD_GLYPH = 5976  # nle.nethack.MAX_GLYPH: an id no map square has, the crop's outside
# nle.nethack.NLE_BL_* indices of blstats
BL_X, BL_Y, BL_HP, BL_HPMAX, BL_DEPTH, BL_ENE, BL_ENEMAX, BL_AC = 0, 1, 10, 11, 12, 14, 15, 16
BL_SCORE, BL_XP, BL_TIME, BL_HUNGER, BL_CAP, BL_DNUM, BL_DLEVEL = 9, 18, 20, 21, 22, 23, 24
IN_YN, IN_GETLIN, MORE_WAIT = 1, 2, 3  # indices of NLE's "internal" observation
FOOD_CLASS = 7


def action_key(action: int) -> int:
    """The NetHack key of a reduced action."""
    if not 0 <= int(action) < NUM_ACTIONS:
        raise ValueError(f"action must be in [0, {NUM_ACTIONS}), got {action!r}")
    return ACTION_KEYS[int(action)]


def action_from_key(key: int) -> int:
    """Inverse of ``action_key``; raises for a key outside the reduced set."""
    if key not in ACTION_KEYS:
        raise ValueError(f"key {key!r} is not in the reduced action set {ACTION_NAMES}")
    return ACTION_KEYS.index(key)


def nle_action_index(action: int) -> int:
    """Index of a reduced action's key in ``nle.nethack.ACTIONS`` (NetHackChallenge's space)."""
    from nle import nethack

    return [int(a) for a in nethack.ACTIONS].index(action_key(action))


@dataclasses.dataclass(frozen=True)
class NetHackConfig:
    """What defines a NetHack env (the host-env counterpart of env params).

    ``max_steps``: agent steps (actions, macros count one) before truncation; ``stall_limit``:
    agent steps without the game clock moving before truncation. ``start="far"`` begins every
    episode at the first step on Dlvl >= ``far_depth`` of a stored bot prefix (``prefixes``: an
    asset directory, ``None`` for the packaged one).
    """

    character: str = "mon-hum-neu-mal"
    crop: int = 9
    max_steps: int = 10_000
    stall_limit: int = 500
    obs_mode: str = "dict"
    start: str = "close"
    far_depth: int = 2
    prefixes: str | None = None
    full_map: bool = False

    def __post_init__(self) -> None:
        if self.character not in CHARACTERS:
            raise ValueError(
                f"character {self.character!r} is not supported: the bot, its eat/pray rules and "
                f"the reduced action set are written for {', '.join(CHARACTERS)}"
            )
        for ok, what in (
            (self.crop in range(1, 2 * ROWS, 2), f"crop must be an odd int < {2 * ROWS}"),
            (self.obs_mode in OBS_MODES, f"obs_mode must be one of {OBS_MODES}"),
            (self.start in STARTS, f"start must be one of {STARTS}"),
            (self.far_depth in range(2, 60), "far_depth must be an int >= 2 (Dlvl 1 is Close)"),
            (self.max_steps >= 1 and self.stall_limit >= 1, "max_steps, stall_limit must be >= 1"),
        ):
            if not ok:
                raise ValueError(f"{what}; got {self}")

    @property
    def obs_size(self) -> int:
        """Length of the ``flat`` observation: one-hot glyph classes of the crop, then stats."""
        return self.crop * self.crop * NUM_GLYPH_CLASSES + NUM_STATS


def message(raw: dict[str, np.ndarray]) -> bytes:
    """The top-line message of a raw NLE observation."""
    return bytes(raw["message"]).split(b"\0", 1)[0]


def food_letter(raw: dict[str, np.ndarray]) -> int | None:
    """Key of the first comestible in the inventory, skipping corpses, tins and eggs."""
    inv = zip(raw["inv_letters"], raw["inv_oclasses"], raw["inv_strs"], strict=True)
    for letter, oclass, desc in inv:
        if oclass == FOOD_CLASS and not any(w in bytes(desc) for w in (b"corpse", b"tin", b"egg")):
            return int(letter)
    return None


class NetHackGame:
    """One seeded game on NLE's ``NetHackScore`` with NetHackChallenge's settings (all prompts
    and menus shown, score-delta reward, no step penalty). ``reset(core, disp) -> obs``,
    ``step(action) -> (obs, reward, terminated, truncated, info)``; ``raw``: the last raw NLE
    observation (live buffers). Play is a function of the seeds and the actions."""

    def __init__(self, config: NetHackConfig | None = None, **overrides: Any) -> None:
        try:
            from nle.env.tasks import NetHackScore
        except ImportError as e:
            raise ImportError("NetHack needs the nle extra: pip install 'fpc_jax[nle]'") from e
        self.config = config or NetHackConfig(**overrides)
        logging.getLogger("nle.env.base").setLevel(logging.ERROR)  # its warning on "internal"
        with warnings.catch_warnings():  # ... sent with the deprecated logger.warn
            warnings.simplefilter("ignore", DeprecationWarning)
            self.env = NetHackScore(
                character=self.config.character,
                actions=tuple(range(256)),
                penalty_step=0.0,
                allow_all_yn_questions=True,
                allow_all_modes=True,
                max_episode_steps=1 << 62,
                fix_moon_phase=True,
                observation_keys=RAW_KEYS,
            )
        from fpc_jax.envs.nle_bot import glyph_class_table

        self._table = glyph_class_table()
        h = self.config.crop // 2
        self._pad = np.full((ROWS + 2 * h, COLS + 2 * h), PAD_GLYPH, np.int16)
        self.raw: dict[str, np.ndarray] = {}
        self.over = True

    def reset(self, core: int, disp: int) -> dict[str, np.ndarray] | np.ndarray:
        self.seeds = (int(core), int(disp))
        self.env.seed(*self.seeds, reseed=False)
        self.raw, _ = self.env.reset()
        self.over = self._done = False
        self.steps, self._stall, self._stairs, self.actions, self.max_depth = 0, 0, {}, [], 0
        self._track()
        self.start_depth = self.depth
        return self.observe()

    def _press(self, key: int) -> None:
        self.raw, r, done, _, _ = self.env.step(key)
        self._reward += r
        self._done = self._done or done

    def _macro_prompts(self, answers: dict[bytes, int | None]) -> None:
        for _ in range(3):
            if self._done or not self.raw["internal"][IN_YN]:
                return
            msg = message(self.raw)
            key = next((k for q, k in answers.items() if q in msg), None)
            self._press(ACTION_KEYS[ESC] if key is None else key)

    def step(self, action: int) -> tuple[Any, float, bool, bool, dict[str, np.ndarray]]:
        if self.over:
            raise RuntimeError("episode is over: call reset()")
        a, self._reward = int(action), 0.0
        self._press(action_key(a))
        if a == EAT:  # eat from the inventory, never from the floor
            food = food_letter(self.raw)
            self._macro_prompts({b"eat it?": ord("n"), b"eat one?": ord("n"), b"to eat?": food})
        elif a == PRAY:
            self._macro_prompts({b"want to pray?": ord("y")})
        self.actions.append(a)
        self.steps, turn = self.steps + 1, self.turn
        self._track()
        self._stall = self._stall + 1 if self.turn == turn else 0
        cap = self.steps >= self.config.max_steps or self._stall >= self.config.stall_limit
        terminated, truncated = self._done, cap and not self._done
        self.over = terminated or truncated
        info = {k: np.int32(getattr(self, k)) for k in ("depth", "max_depth", "score", "turn")}
        return self.observe(), float(self._reward), terminated, truncated, info

    def _track(self) -> None:
        """Game counters and the down-stairs seen on each level (all kept through death)."""
        if self._done:
            return
        bl = self.raw["blstats"]
        self.x, self.y, self.turn, self.score = (
            int(v) for v in bl[[BL_X, BL_Y, BL_TIME, BL_SCORE]]
        )
        self.depth, self.level = int(bl[BL_DEPTH]), (int(bl[BL_DNUM]), int(bl[BL_DLEVEL]))
        self.max_depth = max(self.depth, self.max_depth)
        down = np.argwhere(self._table[self.raw["glyphs"]] == GLYPH_CLASSES.index("stairs_down"))
        here = [(self.y, self.x)] if b"staircase down here" in message(self.raw) else []  # '>'
        self._stairs.setdefault(self.level, set()).update((x, y) for y, x in [*down, *here])

    def observe(self) -> dict[str, np.ndarray] | np.ndarray:
        """The policy's observation (docs/nethack.md): glyph crop, classes, stats (and map)."""
        c, h = self.config.crop, self.config.crop // 2
        self._pad[h : h + ROWS, h : h + COLS] = self.raw["glyphs"]
        glyphs = self._pad[self.y : self.y + c, self.x : self.x + c].copy()
        classes = self._table[glyphs]
        classes[h, h] = GLYPH_CLASSES.index("self")
        stats = self._stats()
        if self.config.obs_mode == "flat":
            onehot = np.eye(NUM_GLYPH_CLASSES, dtype=np.float32)[classes].reshape(-1)
            return np.concatenate([onehot, stats])
        obs = {"glyphs": glyphs, "classes": classes, "stats": stats}
        if self.config.full_map:
            obs["map"] = self._table[self.raw["glyphs"]]
        return obs

    def _stats(self) -> np.ndarray:
        bl, internal = self.raw["blstats"], self.raw["internal"]
        maxhp, maxen = max(int(bl[BL_HPMAX]), 1), max(int(bl[BL_ENEMAX]), 1)
        hunger = int(bl[BL_HUNGER])
        seen = self._stairs.get(self.level, ())  # (x, y) of every '>' seen on this level
        st = min(seen, key=lambda p: max(abs(p[0] - self.x), abs(p[1] - self.y)), default=None)
        dx, dy = (st[0] - self.x, st[1] - self.y) if st else (0, 0)
        return np.array(
            [
                bl[BL_HP] / maxhp,
                min(maxhp, 200) / 200,
                min(self.depth, 50) / 10,
                bl[BL_XP] / 30,
                bl[BL_ENE] / maxen,
                np.clip((10 - bl[BL_AC]) / 20, -1, 2),
                hunger >= 2,
                hunger >= 3,
                np.log1p(self.turn) / np.log1p(1e5),
                bl[BL_CAP] / 5,
                internal[MORE_WAIT],
                internal[IN_YN],
                internal[IN_GETLIN],
                st is not None,
                st is not None and dx == dy == 0,
                dx / COLS,
                dy / ROWS,
                self.x / COLS,
                self.y / ROWS,
            ],
            np.float32,
        )

    def replay(self, core: int, disp: int, actions: np.ndarray) -> Any:
        """Reset to ``(core, disp)`` and play ``actions``; returns the observation after them.
        This config's ``max_steps`` / ``stall_limit`` do not cut a replay (a prefix may be longer
        than an episode's limit); the stall count restarts after it."""
        self.reset(core, disp)
        for a in np.asarray(actions):
            self.step(int(a))  # raises if the game ended before the last action
            self.over = self._done
        self._stall = 0
        return self.observe()

    def close(self) -> None:
        self.env.close()
