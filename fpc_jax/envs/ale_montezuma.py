"""Host-side (NumPy) Montezuma's Revenge on the real game (ale-py): frames or RAM features, room
starts restored from a shipped asset, and the ICML 2024 paper's per-room success metric.

One ALE per env (ale-py's vector env cannot restore states); the vector env is
``fpc_jax.envs.ale_workers`` (on the shared ``host_pool``), the RAM map, room geometry and room
success ``fpc_jax.envs.ale_rooms`` (re-exported here). ale_py is imported lazily, so this module
loads without it.
Design, RAM map and its evidence, the room numbering, deviations, measurements: docs/montezuma.md.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from fpc_jax.envs.ale_rooms import (  # noqa: F401  (re-exported: the public API of this module)
    NUM_ROOMS,
    OPPOSITE,
    PYRAMID,
    RAM_DYING,
    RAM_FACING,
    RAM_FEATURES,
    RAM_INVENTORY,
    RAM_LEVEL,
    RAM_LIVES,
    RAM_OBJECTS,
    RAM_ROOM,
    RAM_SIZE,
    RAM_X,
    RAM_Y,
    SIDES,
    RoomTracker,
    exit_side,
    ram_features,
    room_success_rate,
)

ROM = "montezuma_revenge"
NUM_ACTIONS = 18
"""ALE's legal set; Montezuma's minimal action set is the same 18 actions (what v5 gives)."""
FRAME_SKIP = 4
STACK = 4
SIZE = 84
FRAME_SHAPE = (210, 160)
OBS_MODES = ("frames", "ram")
PREPROCESSING = "grey(ALE palette) max(last 2 of 4 frames) area-resize 84x84, stack 4; v1"
DEFAULT_STICKY = 0.25  # ALE v5 (Machado et al. 2018), which the RND setup also uses
DEFAULT_MAX_STEPS = 4500  # RND's 18,000-frame episode limit (v5's own is 108,000 frames)
ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "montezuma_starts"
BUILD_COMMAND = "python scripts/build_montezuma_starts.py"
GAME_START = "room1"


def require_ale() -> Any:
    """Import ale_py (the ``ale`` extra), with the install command in the error."""
    try:
        import ale_py
    except ImportError as e:
        raise ImportError(
            "Montezuma's Revenge needs ale-py (it ships the ROM): pip install -e '.[ale]'"
        ) from e
    return ale_py


@functools.cache
def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Row i averages input cells [i s, (i + 1) s), s = n_in / n_out, with fractional edges
    (the weights of OpenCV's INTER_AREA downscaling); the reference for ``_area_resize``."""
    scale = n_in / n_out
    m = np.zeros((n_out, n_in), np.float32)
    for i in range(n_out):
        lo, hi = i * scale, (i + 1) * scale
        for j in range(int(np.floor(lo)), min(int(np.ceil(hi)), n_in)):
            m[i, j] = (min(hi, j + 1) - max(lo, j)) / scale
    return m


@functools.cache
def _area_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """``_area_matrix`` as (input index, weight) taps, ``[K, n_out]`` each (K = 3 here)."""
    m = _area_matrix(n_in, n_out)
    k = int((m > 0).sum(1).max())
    idx = np.zeros((k, n_out), np.int64)
    w = np.zeros((k, n_out), np.float32)
    for i, row in enumerate(m):
        (nz,) = np.nonzero(row)
        idx[: len(nz), i], w[: len(nz), i] = nz, row[nz]
    return idx, w


def preprocess(grey_a: np.ndarray, grey_b: np.ndarray) -> np.ndarray:
    """Max of two consecutive 210x160 grey frames, area-resized to 84x84 (uint8). The resize is
    the matmul by ``_area_matrix`` done as a few weighted gathers: on a loaded CPU OpenBLAS's
    threads make that small matmul 100x slower."""
    frame = np.maximum(grey_a, grey_b).astype(np.float32)
    rows, w_rows = _area_taps(FRAME_SHAPE[0], SIZE)
    cols, w_cols = _area_taps(FRAME_SHAPE[1], SIZE)
    tall = sum(frame[r] * w[:, None] for r, w in zip(rows, w_rows, strict=True))
    out = sum(tall[:, c] * w[None, :] for c, w in zip(cols, w_cols, strict=True))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# --- start states -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Start:
    """One start: ``state`` (pickled ALEState bytes; ``None`` for the game start), its first
    preprocessed frame, the RAM room, the route index and the side it was entered by."""

    name: str
    route_index: int
    ram_room: int
    entrance: str
    state: bytes | None
    frame: np.ndarray | None


@dataclasses.dataclass(frozen=True)
class StartSet:
    """The start-state asset: ``starts`` by name, ``close``/``far`` names, the build record."""

    starts: dict[str, Start]
    close: tuple[str, ...]
    far: tuple[str, ...]
    meta: dict[str, Any]

    def get(self, name: str) -> Start:
        if name not in self.starts:
            names = list(self.starts)
            near = difflib.get_close_matches(str(name), names, n=3)
            hint = f" Did you mean {', '.join(map(repr, near))}?" if near else ""
            raise ValueError(
                f"unknown Montezuma room {name!r}.{hint} Valid: {', '.join(names)} "
                f"(route numbering, room1 = game start; Close {list(self.close)}, "
                f"Far {list(self.far)}; docs/montezuma.md)"
            )
        return self.starts[name]

    def route_index(self, ram_room: int) -> int:
        """Route index (room<k>) of a RAM room, 0 if the route does not pass it."""
        return self.meta["ram_to_route"].get(str(int(ram_room)), 0)


@functools.cache
def load_starts(path: str | Path | None = None) -> StartSet:
    """Read the asset (meta.json, states.pkl, frames.npy); the game start ``room1`` is implicit."""
    path = Path(path) if path is not None else ASSET_DIR
    files = [path / "meta.json", path / "states.pkl", path / "frames.npy"]
    missing = [str(f.name) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(
            f"Montezuma start-state asset incomplete at {path} (missing {', '.join(missing)}); "
            f"rebuild it with `{BUILD_COMMAND} --out {path}` (docs/montezuma.md)"
        )
    meta = json.loads(files[0].read_text())
    states = pickle.loads(files[1].read_bytes())
    frames = np.load(files[2])
    starts = {GAME_START: Start(GAME_START, 1, 1, "start", None, None)}
    for row in meta["starts"]:
        starts[row["name"]] = Start(
            row["name"],
            row["route_index"],
            row["ram_room"],
            row["entrance"],
            states[row["name"]],
            frames[row["frame"]],
        )
    return StartSet(starts, tuple(meta["close"]), tuple(meta["far"]), meta)


# --- one game, one episode ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MontezumaConfig:
    """What defines the env (the host-env counterpart of env params).

    ``obs``: ``"frames"`` (uint8 ``[4, 84, 84]``) or ``"ram"`` (float32 ``[RAM_SIZE]``).
    ``sticky``: ALE's repeat_action_probability. ``max_steps``: truncation in agent steps.
    ``terminal_on_life_loss``: end the episode at the first lost life. ``start``: the default
    start name (route numbering). ``asset``: the start-state directory (default: shipped one).
    """

    obs: str = "frames"
    sticky: float = DEFAULT_STICKY
    max_steps: int = DEFAULT_MAX_STEPS
    terminal_on_life_loss: bool = False
    start: str = GAME_START
    asset: str | None = None

    def __post_init__(self) -> None:
        if self.obs not in OBS_MODES:
            raise ValueError(f"unknown obs {self.obs!r}; valid: {', '.join(OBS_MODES)}")
        if not 0.0 <= self.sticky < 1.0:
            raise ValueError(f"sticky must be in [0, 1), got {self.sticky!r}")
        if int(self.max_steps) != self.max_steps or self.max_steps < 1:
            raise ValueError(f"max_steps must be a positive integer, got {self.max_steps!r}")

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return (STACK, SIZE, SIZE) if self.obs == "frames" else (RAM_SIZE,)

    @property
    def obs_dtype(self) -> type:
        return np.uint8 if self.obs == "frames" else np.float32


class MontezumaGame:
    """One ALE playing Montezuma's Revenge with ``FRAME_SKIP`` frames per agent step."""

    def __init__(self, seed: int = 0, sticky: float = DEFAULT_STICKY) -> None:
        ale_py = require_ale()
        ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
        ale = ale_py.ALEInterface()
        ale.setInt("random_seed", int(seed) % (2**31))
        ale.setFloat("repeat_action_probability", float(sticky))
        ale.setInt("max_num_frames_per_episode", 0)  # truncation is ours (max_steps)
        ale.loadROM(ale_py.roms.get_rom_path(ROM))
        self.ale = ale
        self.actions = ale.getLegalActionSet()
        self._grey = np.zeros((2, *FRAME_SHAPE), np.uint8)
        ale.reset_game()

    def reset_game(self) -> None:
        self.ale.reset_game()

    def restore(self, state: bytes) -> None:
        self.ale.restoreState(pickle.loads(state))

    def clone(self) -> bytes:
        """The state without the sticky-action RNG (each env keeps its own)."""
        return pickle.dumps(self.ale.cloneState())

    def ram(self) -> np.ndarray:
        return self.ale.getRAM()

    def frame(self) -> np.ndarray:
        """The current screen preprocessed alone (used for the game start's first observation)."""
        self.ale.getScreenGrayscale(self._grey[0])
        return preprocess(self._grey[0], self._grey[0])

    def step(self, action: int, frames: bool = True) -> tuple[float, np.ndarray | None]:
        """``FRAME_SKIP`` frames of ``action``; returns (summed reward, pooled frame or None)."""
        ale, a = self.ale, self.actions[int(action)]
        reward = 0.0
        for k in range(FRAME_SKIP):
            reward += ale.act(a)
            if frames and k >= FRAME_SKIP - 2:
                ale.getScreenGrayscale(self._grey[k - FRAME_SKIP + 2])
        return reward, (preprocess(self._grey[0], self._grey[1]) if frames else None)


INFO_KEYS: tuple[str, ...] = (
    "room",
    "route_room",
    "level",
    "x",
    "y",
    "lives",
    "inventory",
    "life_lost",
    "room_changed",
    "success_room",
    "episode_visited",
    "episode_success",
    "episode_return",
    "episode_length",
    "start",
)


class MontezumaEnv:
    """One episode stream: ``reset(start) -> obs``, ``step(action) -> (obs, reward, terminated,
    truncated, info)``; info values are NumPy scalars (``INFO_KEYS``). No auto-reset.

    ``terminated``: game over, or the first lost life with ``terminal_on_life_loss``;
    ``truncated``: ``max_steps`` agent steps since the reset. ``episode_*`` are running values
    of the current episode (final at its last step). ``start`` is the route index of the start.
    """

    def __init__(self, config: MontezumaConfig | None = None, seed: int = 0) -> None:
        self.config = config or MontezumaConfig()
        self.game = MontezumaGame(seed, self.config.sticky)
        self.starts = load_starts(self.config.asset)
        self.starts.get(self.config.start)
        self.start = self.config.start
        self.tracker = RoomTracker()
        self._stack = np.zeros((STACK, SIZE, SIZE), np.uint8)
        self.done = True

    def _obs(self) -> np.ndarray:
        if self.config.obs == "ram":
            return ram_features(self.game.ram())
        return self._stack.copy()

    def reset(self, start: str | None = None) -> np.ndarray:
        s = self.starts.get(start if start is not None else self.start)
        self.start = s.name
        if s.state is None:
            self.game.reset_game()
            frame = self.game.frame() if self.config.obs == "frames" else None
        else:
            self.game.restore(s.state)
            frame = s.frame
        if frame is not None:
            self._stack[:] = frame
        ram = self.game.ram()
        self.tracker.reset(ram[RAM_ROOM], s.entrance, ram[RAM_INVENTORY])
        self.lives = int(self.game.ale.lives())
        self.t, self.ret, self.done = 0, 0.0, False
        self._start_index = s.route_index
        return self._obs()

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.done:
            raise RuntimeError("episode is over: call reset()")
        if not 0 <= int(action) < NUM_ACTIONS:
            raise ValueError(f"action must be in [0, {NUM_ACTIONS}), got {action!r}")
        reward, frame = self.game.step(action, frames=self.config.obs == "frames")
        if frame is not None:
            self._stack[:-1] = self._stack[1:]
            self._stack[-1] = frame
        ram = self.game.ram()
        prev_room = self.tracker.room
        success_room = self.tracker.update(ram[RAM_ROOM], ram[RAM_INVENTORY], reward)
        lives = int(self.game.ale.lives())
        life_lost = lives < self.lives
        self.lives = lives
        self.t += 1
        self.ret += reward
        terminated = self.game.ale.game_over() or (life_lost and self.config.terminal_on_life_loss)
        truncated = not terminated and self.t >= self.config.max_steps
        self.done = terminated or truncated
        room = int(ram[RAM_ROOM])
        info = {
            "room": np.int32(room),
            "route_room": np.int32(self.starts.route_index(room)),
            "level": np.int32(ram[RAM_LEVEL]),
            "x": np.int32(ram[RAM_X]),
            "y": np.int32(ram[RAM_Y]),
            "lives": np.int32(lives),
            "inventory": np.int32(ram[RAM_INVENTORY]),
            "life_lost": np.bool_(life_lost),
            "room_changed": np.bool_(room != prev_room),
            "success_room": np.int32(success_room),
            "episode_visited": np.int32(self.tracker.visited),
            "episode_success": np.int32(self.tracker.succeeded),
            "episode_return": np.float32(self.ret),
            "episode_length": np.int32(self.t),
            "start": np.int32(self._start_index),
        }
        return self._obs(), float(reward), bool(terminated), bool(truncated), info


# --- factory ------------------------------------------------------------------------------------


def make_montezuma(
    num_envs: int | None = None, seed: int = 0, workers: int = 0, **overrides: Any
) -> tuple[Any, MontezumaConfig]:
    """Registry factory for ``ale/montezuma``: ``(MontezumaEnv, config)``, or
    ``(MontezumaVec, config)`` when ``num_envs`` is given (``workers`` processes, 0 in-process).
    ``overrides`` are ``MontezumaConfig`` fields (obs, sticky, max_steps, terminal_on_life_loss,
    start, asset)."""
    config = MontezumaConfig(**overrides)
    load_starts(config.asset).get(config.start)
    if num_envs is None:
        if workers:
            raise ValueError("workers needs num_envs (a MontezumaVec)")
        return MontezumaEnv(config, seed=seed), config
    from fpc_jax.envs.ale_workers import MontezumaVec

    return MontezumaVec(num_envs=num_envs, seed=seed, workers=workers, config=config), config
