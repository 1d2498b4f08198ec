"""A rule-based NetHack bot that descends (explore, fight, eat, pray, take the stairs), and its
play as (obs, action) data for behavioural cloning (the stored prefixes for Far starts:
``nle_prefixes``). Rules, measurements and deviations from the paper: docs/nethack.md.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from fpc_jax.envs import nle_nethack as nh
from fpc_jax.envs.nle_nethack import DOWN, EAT, ESC, KICK, MORE, MOVE_DELTAS, PRAY, SEARCH

_C = {name: i for i, name in enumerate(nh.GLYPH_CLASSES)}
_WALKABLE = (
    "floor",
    "corridor",
    "doorway",
    "door_closed",
    "stairs_down",
    "stairs_up",
    "feature",
    "monster",
    "pet",
    "food",
    "object",
)
_WALK_CLASS = np.isin(np.arange(len(nh.GLYPH_CLASSES)), [_C[n] for n in _WALKABLE])
_AVOID = (
    "floating eye",
    "gas spore",
    "blue jelly",
    "spotted jelly",
    "brown mold",
    "yellow mold",
    "green mold",
    "red mold",
    "acid blob",
)
"""Monsters never meleed (passive paralysis, explosions, acid/cold/fire): obstacles instead."""
_NO_DIAG_CMAP = (13, 14, 15, 16)  # open and closed doors: no diagonal moves in or out
_DOWN_HERE = b"staircase down here"
MAX_KICKS = 30  # kicks at one locked door before giving up on it
SEARCH_SPOT = 15  # searches at one spot before moving on (a hidden spot is found w.p. ~1/7 each)


@dataclasses.dataclass
class _Level:
    visited: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((21, 79), bool))
    searched: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((21, 79), np.int32))
    blocked: dict = dataclasses.field(default_factory=dict)  # (x, y) -> step it is free again
    kicks: dict = dataclasses.field(default_factory=dict)  # (x, y) of a locked door -> kicks
    peaceful: set = dataclasses.field(default_factory=set)  # glyph ids not to attack here
    down: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((21, 79), bool))
    doors: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((21, 79), bool))


class NetHackBot:
    """Act on a raw NLE observation (``NetHackGame.raw``) with the reduced action set.

    Rules, first match wins: answer prompts (--More-- -> MORE, a kick's direction, any other
    question -> ESC); pray when HP is low (< 1/7 or <= 5) and no prayer in 1000 turns (after turn
    300); attack an adjacent hostile; eat when Hungry; rest (search) below half HP; take '>' when
    on it; walk (BFS) to a seen '>'; else to the nearest unvisited walkable square next to
    unexplored stone; else search for hidden passages at dead ends and walls. Locked doors are
    kicked. A move that does not move marks its target blocked for a while.
    """

    def __init__(self) -> None:
        from nle import nethack

        self._table = glyph_class_table()
        names = [nethack.permonst(i).mname for i in range(nethack.NUMMONS)]
        self._avoid = np.zeros(nh.PAD_GLYPH + 1, bool)
        for off in (nethack.GLYPH_MON_OFF, nethack.GLYPH_DETECT_OFF):
            self._avoid[[off + names.index(n) for n in _AVOID]] = True
        self._nodiag = np.zeros(nh.PAD_GLYPH + 1, bool)
        self._nodiag[[nethack.GLYPH_CMAP_OFF + c for c in _NO_DIAG_CMAP]] = True
        self.reset()

    def reset(self) -> None:
        self.levels: dict[tuple[int, int], _Level] = {}
        self.t, self.last_pray, self.last_eat = 0, -(10**9), -(10**9)
        self._kick_dir: int | None = None
        self._last: tuple[int, int, int] | None = None  # (x, y, move) of the previous move
        self._went_down: tuple[int, int, int] | None = None  # (x, y, turn) of the last DOWN
        self._path: list[int] = []  # flat squares still to walk
        self._unreachable: int | None = None

    def act(self, raw: dict[str, np.ndarray]) -> int:
        self.t += 1
        internal, msg = raw["internal"], nh.message(raw)
        if internal[nh.MORE_WAIT]:
            return MORE
        if internal[nh.IN_YN]:
            if self._kick_dir is not None and b"direction" in msg:
                d, self._kick_dir = self._kick_dir, None
                return d
            if b"Really attack" in msg and self._last is not None:
                lv = self._level(raw)
                x, y, d = self._last
                tx, ty = x + MOVE_DELTAS[d][0], y + MOVE_DELTAS[d][1]
                lv.peaceful.add(int(raw["glyphs"][ty, tx]))
            return ESC
        if internal[nh.IN_GETLIN]:
            return ESC
        self._kick_dir = None
        a = self._decide(raw, msg)
        bl = raw["blstats"]
        self._last = (int(bl[nh.BL_X]), int(bl[nh.BL_Y]), a) if a < 8 else None
        return a

    def _level(self, raw: dict[str, np.ndarray]) -> _Level:
        bl = raw["blstats"]
        return self.levels.setdefault((int(bl[nh.BL_DNUM]), int(bl[nh.BL_DLEVEL])), _Level())

    def _decide(self, raw: dict[str, np.ndarray], msg: bytes) -> int:
        bl, glyphs = raw["blstats"], raw["glyphs"]
        x, y, hp, maxhp = (int(bl[i]) for i in (nh.BL_X, nh.BL_Y, nh.BL_HP, nh.BL_HPMAX))
        turn, lv, cls = int(bl[nh.BL_TIME]), self._level(raw), self._table[glyphs]
        lv.visited[y, x] = True
        lv.down |= cls == _C["stairs_down"]
        lv.down[y, x] |= _DOWN_HERE in msg  # a '>' under objects shows as the objects
        lv.doors |= self._nodiag[glyphs]
        self._doors, self._pos = lv.doors, (x, y)
        if self._last is not None and self._last[:2] == (x, y):  # the last move did not move
            d = self._last[2]
            tx, ty = x + MOVE_DELTAS[d][0], y + MOVE_DELTAS[d][1]
            if b"locked" in msg and lv.kicks.get((tx, ty), 0) < MAX_KICKS:
                lv.kicks[(tx, ty)] = lv.kicks.get((tx, ty), 0) + 1
                self._kick_dir = d
                return KICK
            if b"diagonally" in msg:  # a door under an object or under the agent: no diagonals
                lv.doors[(ty, tx) if b"into" in msg else (y, x)] = True
            else:
                busy = cls[ty, tx] in (_C["monster"], _C["pet"])
                lv.blocked[(tx, ty)] = self.t + (3 if busy else 40)
            self._path = []
        if (hp <= 5 or 7 * hp < maxhp) and turn > 300 and turn - self.last_pray > 1000:
            self.last_pray = turn
            return PRAY
        for d, (dx, dy) in enumerate(MOVE_DELTAS):
            tx, ty = x + dx, y + dy
            if not (0 <= tx < 79 and 0 <= ty < 21):  # attacks may go diagonally through doors
                continue
            g = int(glyphs[ty, tx])
            if cls[ty, tx] == _C["monster"] and not self._avoid[g] and g not in lv.peaceful:
                return d
        if int(bl[nh.BL_HUNGER]) >= 2 and turn - self.last_eat > 50 and nh.food_letter(raw):
            self.last_eat = turn
            return EAT
        if 2 * hp < maxhp:
            return SEARCH
        if lv.down[y, x]:
            if self._went_down != (x, y, turn):  # not a '>' after all if pressing it did nothing
                self._went_down = (x, y, turn)
                return DOWN
            lv.down[y, x] = False
        walk = self._walkable(cls, glyphs, lv)
        frontier = walk & ~lv.visited & _dilate(cls == _C["unknown"])
        items = ~lv.visited & ((cls == _C["object"]) | (cls == _C["food"]))  # may hide a '>'
        step = self._route(walk, lv.down, frontier, items)
        return self._search(cls, walk, lv, x, y) if step is None else step

    def _walkable(self, cls: np.ndarray, glyphs: np.ndarray, lv: _Level) -> np.ndarray:
        walk = _WALK_CLASS[cls] & ~self._avoid[glyphs]
        for g in lv.peaceful:
            walk &= glyphs != g
        for (bx, by), until in list(lv.blocked.items()):
            if until < self.t:
                del lv.blocked[(bx, by)]
            else:
                walk[by, bx] = False
        return walk

    def _route(self, walk: np.ndarray, *tiers: np.ndarray) -> int | None:
        """First move of a shortest 8-connected path (BFS) to a square of the first target tier
        that can be reached; None if none can. A path found earlier is followed while it lasts."""
        x, y = self._pos
        if self._path and any(t[self._path[-1] // 79, self._path[-1] % 79] for t in tiers):
            ny, nx = divmod(self._path[0], 79)
            if max(abs(nx - x), abs(ny - y)) == 1 and walk[ny, nx]:
                self._path.pop(0)
                return MOVE_DELTAS.index((nx - x, ny - y))
        self._path, tiers = [], tuple(t for t in tiers if t.any())
        key = hash((x, y, walk.tobytes(), *(t.tobytes() for t in tiers)))
        if not tiers or key == self._unreachable:  # nothing to reach, or as unreachable as before
            return None
        ok, doors = walk.ravel().tolist(), self._doors.ravel().tolist()
        flat = [t.ravel().tolist() for t in tiers]
        start = y * 79 + x
        parent = [-1] * (21 * 79)
        parent[start] = start
        found: list[int | None] = [None] * len(tiers)
        layer = [start]
        while layer and found[0] is None:
            nxt = []
            for c in layer:
                for n, diag in _NEIGHBOURS[c]:
                    if parent[n] < 0 and ok[n] and not (diag and (doors[c] or doors[n])):
                        parent[n] = c
                        nxt.append(n)
                        for k, t in enumerate(flat):
                            if t[n] and found[k] is None:
                                found[k] = n
            layer = nxt
        goal = next((f for f in found if f is not None), None)
        if goal is None:
            self._unreachable = key
            return None
        while goal != start:
            self._path.append(goal)
            goal = parent[goal]
        self._path.reverse()
        return self._route(walk, *tiers)

    def _search(self, cls: np.ndarray, walk: np.ndarray, lv: _Level, x: int, y: int) -> int:
        """Search in place, or walk to the nearest dead end / wall-side square searched least."""
        solid = walk & _dilate((cls == _C["wall"]) | (cls == _C["unknown"]))
        spots = solid & (lv.searched < SEARCH_SPOT)
        if not spots.any():
            lv.searched[:] = 0
            spots = solid
        if spots[y, x]:  # one search covers the 8 neighbours: count it for them too
            lv.searched[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2] += 1
            return SEARCH
        step = self._route(walk, spots & (_neighbours(walk) <= 1), spots)  # dead ends first
        if step is None:
            lv.searched[y, x] += 1
        return SEARCH if step is None else step


_NEIGHBOURS = [
    [
        ((y + dy) * 79 + x + dx, dx != 0 and dy != 0)
        for dx, dy in MOVE_DELTAS
        if 0 <= x + dx < 79 and 0 <= y + dy < 21
    ]
    for y in range(21)
    for x in range(79)
]
"""Per flat square index y * 79 + x: its in-map 8-neighbours and whether the step is diagonal."""


def _shifts(mask: np.ndarray) -> list[np.ndarray]:
    p = np.zeros((23, 81), mask.dtype)
    p[1:22, 1:80] = mask
    return [p[1 + dy : 22 + dy, 1 + dx : 80 + dx] for dx, dy in MOVE_DELTAS]


def _dilate(mask: np.ndarray) -> np.ndarray:
    """Squares with at least one 8-neighbour in ``mask``."""
    return np.logical_or.reduce(_shifts(mask))


def _neighbours(mask: np.ndarray) -> np.ndarray:
    return np.sum(_shifts(mask), axis=0)


@functools.cache
def glyph_class_table() -> np.ndarray:
    """uint8 [MAX_GLYPH + 1]: the ``GLYPH_CLASSES`` index of every NLE glyph id (PAD_GLYPH: pad)."""
    from nle import nethack as n

    cmap = np.full(n.MAXPCHARS, _C["floor"], np.uint8)  # floor: also beams, effects, drawbridges
    for idx, name in (
        ((0,), "unknown"),
        (range(1, 12), "wall"),
        ((17, 18, 37, 38), "wall"),
        ((21, 22), "corridor"),
        ((12, 13, 14), "doorway"),
        ((15, 16), "door_closed"),
        ((24, 26), "stairs_down"),
        ((23, 25), "stairs_up"),
        (range(27, 32), "feature"),
        ((32, 34, 40, 41), "hazard"),
        (range(42, 65), "trap"),
    ):
        cmap[list(idx)] = _C[name]
    table = np.full(n.MAX_GLYPH + 1, _C["monster"], np.uint8)  # + invisible, detected, warnings
    table[n.GLYPH_PET_OFF : n.GLYPH_INVIS_OFF] = _C["pet"]
    table[n.GLYPH_BODY_OFF : n.GLYPH_RIDDEN_OFF] = _C["food"]
    for i in range(n.NUM_OBJECTS):
        oc = n.objclass(i)
        name = "food" if ord(oc.oc_class) == nh.FOOD_CLASS else "object"
        table[n.GLYPH_OBJ_OFF + i] = _C["boulder" if n.OBJ_NAME(oc) == "boulder" else name]
    table[n.GLYPH_CMAP_OFF : n.GLYPH_CMAP_OFF + n.MAXPCHARS] = cmap
    table[n.GLYPH_EXPLODE_OFF : n.GLYPH_SWALLOW_OFF] = _C["floor"]
    table[n.GLYPH_STATUE_OFF : n.MAX_GLYPH] = _C["object"]
    table[nh.PAD_GLYPH] = _C["pad"]
    return table


def play_bot(
    game: nh.NetHackGame,
    core: int,
    disp: int,
    max_steps: int = 5000,
    stop_depth: int | None = None,
    record: bool = False,
    bot: NetHackBot | None = None,
) -> dict[str, Any]:
    """One bot game from ``(core, disp)``: stops at death, ``max_steps`` or the first step on
    Dlvl >= ``stop_depth``. Returns the actions (uint8), the depth after each, ``first_step``
    (depth -> number of actions to the first step there), the final counters, and (``record``)
    the policy observation before each action."""
    bot = bot or NetHackBot()
    bot.reset()
    obs = game.reset(core, disp)
    seen, depths, rewards, first_step = [], [], [], {game.depth: 0}
    died = False
    while len(depths) < max_steps:
        if record:
            seen.append(obs)
        obs, reward, died, truncated, _ = game.step(bot.act(game.raw))
        depths.append(game.depth)
        rewards.append(reward)
        first_step.setdefault(game.depth, len(depths))
        if died or truncated or (stop_depth is not None and game.depth >= stop_depth):
            break
    out = {
        "actions": np.array(game.actions, np.uint8),
        "depth": np.array(depths, np.int16),
        "reward": np.array(rewards, np.float32),
        "first_step": first_step,
        "max_depth": game.max_depth,
        "score": game.score,
        "steps": len(depths),
        "turn": game.turn,
        "died": bool(died),
    }
    return out | ({"obs": seen} if record else {})


def bot_dataset(
    seeds: list[tuple[int, int]],
    max_steps: int = 2000,
    stop_depth: int | None = None,
    **config: Any,
) -> dict[str, Any]:
    """(obs, action) pairs of the bot on each ``(core, disp)`` seed, in the policy's reduced action
    space, for pi* = BC of the bot: ``obs`` (dict of [N, ...] arrays or [N, obs_size]), ``action``
    int32 [N], ``episode`` int32 [N], ``depth`` int16 [N] (the Dlvl the action was taken on)."""
    game, bot = nh.NetHackGame(nh.NetHackConfig(**config)), NetHackBot()
    parts = []
    try:
        for i, (core, disp) in enumerate(seeds):
            run = play_bot(game, core, disp, max_steps, stop_depth, record=True, bot=bot)
            before = np.concatenate([[game.start_depth], run["depth"][:-1]]).astype(np.int16)
            parts.append(
                (
                    run["obs"],
                    run["actions"].astype(np.int32),
                    np.full(run["steps"], i, np.int32),
                    before,
                    run["reward"],
                )
            )
    finally:
        game.close()
    obs = [o for p in parts for o in p[0]]
    stacked = (
        {k: np.stack([o[k] for o in obs]) for k in obs[0]}
        if isinstance(obs[0], dict)
        else np.stack(obs)
    )
    cat = [np.concatenate([p[j] for p in parts]) for j in (1, 2, 3, 4)]
    return {"obs": stacked, "action": cat[0], "episode": cat[1], "depth": cat[2], "reward": cat[3]}
