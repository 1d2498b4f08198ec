"""Montezuma's Revenge RAM map and room geometry: the RAM-feature observation, the level-1
pyramid, exit sides and the ICML 2024 paper's per-room success (``RoomTracker``).

Pure NumPy (no ale_py). The RAM map, its evidence and the room numbering: docs/montezuma.md.
"""

from __future__ import annotations

import numpy as np

# RAM addresses (docs/montezuma.md: sources and the checks in tests/test_ale_montezuma.py)
RAM_ROOM, RAM_X, RAM_Y, RAM_FACING, RAM_DYING = 3, 42, 43, 52, 55
RAM_LEVEL, RAM_LIVES, RAM_INVENTORY = 57, 58, 65
RAM_OBJECTS = (44, 45, 46, 47)  # positions of the room's objects/enemies (meaning per room)

PYRAMID = (
    (-1, -1, -1, 0, 1, 2, -1, -1, -1),
    (-1, -1, 3, 4, 5, 6, 7, -1, -1),
    (-1, 8, 9, 10, 11, 12, 13, 14, -1),
    (15, 16, 17, 18, 19, 20, 21, 22, 23),
)
"""RAM room index by (floor, column) of level 1's pyramid (checked against every room change the
start-state search saw: docs/montezuma.md)."""
NUM_ROOMS = 24
_CELL = {r: (i, j) for i, row in enumerate(PYRAMID) for j, r in enumerate(row) if r >= 0}
SIDES = ("start", "left", "right", "top", "bottom", "other")
OPPOSITE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top", "other": "other"}

RAM_FEATURES: tuple[str, ...] = (
    *(f"room_{r}" for r in range(NUM_ROOMS)),
    "level",
    "x",
    "y",
    "facing_right",
    *(f"object_{a}" for a in RAM_OBJECTS),
    *(f"item_bit_{b}" for b in range(8)),
    "lives",
    "dying",
)
RAM_SIZE = len(RAM_FEATURES)


def ram_features(ram: np.ndarray) -> np.ndarray:
    """The RAM-feature observation (float32, ``RAM_SIZE``), each entry scaled to about [0, 1]."""
    f = np.zeros(RAM_SIZE, np.float32)
    f[int(ram[RAM_ROOM]) % NUM_ROOMS] = 1.0
    i = NUM_ROOMS
    f[i] = min(int(ram[RAM_LEVEL]), 8) / 8.0
    f[i + 1] = ram[RAM_X] / 152.0
    f[i + 2] = (int(ram[RAM_Y]) - 128) / 128.0
    f[i + 3] = float(ram[RAM_FACING] == 128)
    f[i + 4 : i + 8] = ram[list(RAM_OBJECTS)] / 255.0
    f[i + 8 : i + 16] = np.unpackbits(np.uint8(ram[RAM_INVENTORY]), bitorder="little")
    f[i + 16] = min(int(ram[RAM_LIVES]), 5) / 5.0
    f[i + 17] = float(ram[RAM_DYING] != 0)
    return f


def exit_side(room_from: int, room_to: int) -> str:
    """Side of ``room_from`` the agent left through to reach ``room_to`` (pyramid geometry)."""
    a, b = _CELL.get(int(room_from)), _CELL.get(int(room_to))
    if a is None or b is None:
        return "other"
    step = (b[0] - a[0], b[1] - a[1])
    return {(0, -1): "left", (0, 1): "right", (-1, 0): "top", (1, 0): "bottom"}.get(step, "other")


class RoomTracker:
    """Per-episode room success of Wolczyk et al. (ICML 2024): in a room, a success is a reward,
    a new item, or leaving through a different exit than the one the agent entered by.

    ``update`` takes the RAM room, inventory and reward after each env step and returns the room a
    success happened in (``-1`` if none). Events of a step go to the room the step began in. A
    room entered at the episode start has entrance ``"start"`` (so any exit counts) unless the
    start says otherwise. ``visited`` and ``succeeded`` are bitmasks over the 24 RAM rooms.
    """

    def __init__(self) -> None:
        self.reset(1, "start", 0)

    def reset(self, room: int, entrance: str, inventory: int) -> None:
        self.room, self.entrance, self.inventory = int(room), entrance, int(inventory)
        self.visited = 1 << (self.room % NUM_ROOMS)
        self.succeeded = 0

    def update(self, room: int, inventory: int, reward: float) -> int:
        room, inventory = int(room), int(inventory)
        prev = self.room
        success = reward > 0 or bool(inventory & ~self.inventory)
        if room != prev:
            side = exit_side(prev, room)
            success |= side != self.entrance
            self.room, self.entrance = room, OPPOSITE[side]
            self.visited |= 1 << (room % NUM_ROOMS)
        self.inventory = inventory
        if success:
            self.succeeded |= 1 << (prev % NUM_ROOMS)
            return prev
        return -1


def room_success_rate(visited: np.ndarray, succeeded: np.ndarray, ram_room: int) -> float:
    """Fraction of the episodes that entered ``ram_room`` with a success in it (NaN if none did);
    ``visited``/``succeeded`` are the per-episode bitmasks of ``info`` at episode ends."""
    bit = 1 << (int(ram_room) % NUM_ROOMS)
    entered = (np.asarray(visited) & bit) != 0
    if not entered.any():
        return float("nan")
    return float(((np.asarray(succeeded) & bit) != 0)[entered].mean())
