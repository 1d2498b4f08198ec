"""Build the Montezuma's Revenge start-state asset (fpc_jax/assets/montezuma_starts/).

    python scripts/build_montezuma_starts.py            # replay the shipped route.npy (seconds)
    python scripts/build_montezuma_starts.py --search   # search a new route first (~5 min, 1 core)

The route is a recorded action sequence from the game start, replayed deterministically (ALE with
sticky actions off, ``repeat_action_probability=0``, ``FRAME_SKIP`` frames per action).

``--search`` finds one with a small Go-Explore archive (Ecoffet et al. 2021, domain-knowledge
cells): cells are (level, room, inventory, x // 16, y // 16); each iteration restores a cell chosen
with weight (1/sqrt(1 + chosen) + 0.5/sqrt(1 + seen)) * exp(3 * (progress - best progress)),
progress = route rooms so far + 0.5 * items held + score / 1000, and explores 100 random actions
(each kept for the next step with probability 0.95). A state enters the archive only if the next
12 steps lose no life (no doomed cells); a cell keeps its best trajectory (more route rooms, then
higher score, then shorter). Everything is seeded and the budget is counted in iterations, so a
rerun with the same arguments and ale-py finds the same route.

The route rooms are the rooms in the order the route first succeeds in them (the paper's room
success, ``RoomTracker``: a reward, a new item, or an exit other than the entrance; a step across a
boundary and back is no success). room<k> starts one step after the route enters room k on that
visit (the room byte changes a step before x/y wrap). docs/montezuma.md records the result.
"""

from __future__ import annotations

import argparse
import copy
import json
import pickle
import time
from pathlib import Path

import numpy as np

from fpc_jax.envs import ale_montezuma as mz

SAFE_STEPS = 12


def advance(tracker: mz.RoomTracker, route: tuple, room: int, items: int, reward: float) -> tuple:
    """One step of the room-success tracker; a room joins the route at its first success."""
    done = tracker.update(room, items, reward)
    return (*route, done) if done >= 0 and done not in route else route


class Cell:
    __slots__ = ("acts", "chosen", "items", "route", "score", "seen", "state", "tracker")

    def __init__(self, items: int) -> None:
        self.chosen = self.seen = 0
        self.items = items
        self.route: tuple = ()
        self.score = -1.0

    def worse(self, route: tuple, score: float, n: int) -> bool:
        return (len(self.route), self.score, -len(self.acts)) < (len(route), score, -n)


def search(iterations: int, seed: int, target_rooms: int, alpha: float = 3.0) -> bytes:
    """Go-Explore archive search; returns the action sequence of the furthest cell's trajectory."""
    game = mz.MontezumaGame(seed=0, sticky=0.0)
    rng = np.random.default_rng(seed)

    def key(ram: np.ndarray) -> tuple[int, ...]:
        return (
            int(ram[mz.RAM_LEVEL]),
            int(ram[mz.RAM_ROOM]),
            int(ram[mz.RAM_INVENTORY]),
            int(ram[mz.RAM_X]) // 16,
            int(ram[mz.RAM_Y]) // 16,
        )

    archive: dict[tuple[int, ...], Cell] = {}

    def add(k, state, score, acts, tracker, route) -> None:
        c = archive.get(k)
        if c is None:
            c = archive[k] = Cell(bin(k[2]).count("1"))
            c.acts = b""
        elif not c.worse(route, score, len(acts)):
            c.seen += 1
            return
        c.state, c.score, c.acts, c.tracker, c.route = state, score, acts, tracker, route

    ram = game.ram()
    add(key(ram), game.ale.cloneState(), 0.0, b"", mz.RoomTracker(), ())
    t0 = time.time()
    best = archive[key(ram)]
    for it in range(1, iterations + 1):
        cells = list(archive.values())
        prog = np.array([len(c.route) + 0.5 * c.items + c.score / 1000 for c in cells])
        w = np.array([1 / np.sqrt(1 + c.chosen) + 0.5 / np.sqrt(1 + c.seen) for c in cells])
        w *= np.exp(alpha * (prog - prog.max()))
        c0 = cells[rng.choice(len(cells), p=w / w.sum())]
        c0.chosen += 1
        game.ale.restoreState(c0.state)
        lives, score, acts, route = game.ale.lives(), c0.score, bytearray(c0.acts), c0.route
        tracker = copy.copy(c0.tracker)
        pending = []
        a = int(rng.integers(mz.NUM_ACTIONS))
        for _ in range(100):
            if rng.random() > 0.95:
                a = int(rng.integers(mz.NUM_ACTIONS))
            r, _ = game.step(a, frames=False)
            score += r
            acts.append(a)
            if game.ale.lives() < lives or game.ale.game_over():
                break
            ram = game.ram()
            route = advance(tracker, route, ram[mz.RAM_ROOM], ram[mz.RAM_INVENTORY], r)
            pending.append(
                (key(ram), game.ale.cloneState(), score, bytes(acts), copy.copy(tracker), route)
            )
            if len(pending) > SAFE_STEPS:
                add(*pending.pop(0))
        best = max(archive.values(), key=lambda c: (len(c.route), c.score, -len(c.acts)))
        if it % 500 == 0 or len(best.route) >= target_rooms:
            msg = f"it {it}: {len(archive)} cells, route rooms {best.route}, score {best.score:.0f}"
            print(f"[{time.time() - t0:5.0f}s] {msg}, {len(best.acts)} steps", flush=True)
        if len(best.route) >= target_rooms:
            break
    return bytes(best.acts)


def replay(route: bytes) -> dict:
    """Replay ``route`` from the game start (sticky off): the per-step RAM log, the route rooms
    (in order of first success) and for each the step its successful visit began."""
    game = mz.MontezumaGame(seed=0, sticky=0.0)
    ram = game.ram()
    log = [
        (
            int(ram[mz.RAM_ROOM]),
            int(ram[mz.RAM_X]),
            int(ram[mz.RAM_Y]),
            int(ram[mz.RAM_INVENTORY]),
            0.0,
            int(game.ale.lives()),
        )
    ]
    states, frames = [None], [None]
    tracker, rooms = mz.RoomTracker(), ()
    visit = {"entry": 0, "entrance": "start"}
    entry = {}
    for a in route:
        r, frame = game.step(a)
        ram = game.ram()
        log.append(
            (
                int(ram[mz.RAM_ROOM]),
                int(ram[mz.RAM_X]),
                int(ram[mz.RAM_Y]),
                int(ram[mz.RAM_INVENTORY]),
                r,
                int(game.ale.lives()),
            )
        )
        states.append(game.clone())
        frames.append(frame)
        new = advance(tracker, rooms, ram[mz.RAM_ROOM], ram[mz.RAM_INVENTORY], r)
        if len(new) > len(rooms):
            entry[new[-1]] = dict(visit)
            rooms = new
        if log[-1][0] != log[-2][0]:
            visit = {"entry": len(log) - 1, "entrance": tracker.entrance}
    return {"log": log, "rooms": rooms, "entry": entry, "states": states, "frames": frames}


def verify(start: dict, state: bytes, route: bytes, log: list) -> None:
    """Restore into fresh ALEs: the expected room, alive, not dying; with sticky off the route's
    next steps reproduce the recorded RAM log."""
    for sticky in (mz.DEFAULT_STICKY, 0.0):
        game = mz.MontezumaGame(seed=123, sticky=sticky)
        game.restore(state)
        ram = game.ram()
        assert int(ram[mz.RAM_ROOM]) == start["ram_room"], (start, int(ram[mz.RAM_ROOM]))
        assert int(game.ale.lives()) == start["lives"] and int(ram[mz.RAM_DYING]) == 0, start
        assert not game.ale.game_over()
    t = start["step"]
    for s in range(t, min(t + 50, len(route))):
        game.step(route[s], frames=False)
        ram = game.ram()
        assert (int(ram[mz.RAM_ROOM]), int(ram[mz.RAM_X]), int(ram[mz.RAM_Y])) == log[s + 1][:3]


def build(route: bytes, out: Path, far_from: int, argv: str, origin: dict) -> dict:
    ale_py = mz.require_ale()
    rep = replay(route)
    log = rep["log"]
    lives = [row[5] for row in log]
    if min(lives) < lives[0]:
        raise SystemExit("the route loses a life: not a valid start-state route")
    if not rep["rooms"] or rep["rooms"][0] != 1:
        raise SystemExit(f"the route must solve the start room first, got {rep['rooms']}")
    starts, states, frames = [], {}, []
    for k, room in enumerate(rep["rooms"][1:], 2):
        t = rep["entry"][room]["entry"]
        if log[t + 1][0] == room:  # the room byte changes a step before x/y wrap to the new room
            t += 1
        row = {
            "name": f"room{k}",
            "route_index": k,
            "ram_room": room,
            "entrance": rep["entry"][room]["entrance"],
            "step": t,
            "x": log[t][1],
            "y": log[t][2],
            "inventory": log[t][3],
            "score": float(sum(r[4] for r in log[: t + 1])),
            "lives": log[t][5],
            "frame": len(frames),
        }
        verify(row, rep["states"][t], route, log)
        starts.append(row)
        states[row["name"]] = rep["states"][t]
        frames.append(rep["frames"][t])
    n = len(rep["rooms"])
    if far_from > n:
        raise SystemExit(f"the route has {n} rooms; Far from room{far_from} needs a longer route")
    seq, events = [[0, log[0][0]]], []
    for t in range(1, len(log)):
        (room0, *_, items0, _, _), (room, *_, items, r, _) = log[t - 1], log[t]
        if room != room0:
            if mz.exit_side(room0, room) == "other":
                raise SystemExit(f"step {t}: room {room0} -> {room} is not a pyramid neighbour")
            seq.append([t, room])
        if r or items & ~items0:
            events.append({"step": t, "ram_room": room0, "reward": r, "new_items": items & ~items0})
    meta = {
        "built_by": f"{mz.BUILD_COMMAND} {argv}".strip(),
        "route_origin": origin,
        "ale_py": ale_py.__version__,
        "rom": mz.ROM,
        "frame_skip": mz.FRAME_SKIP,
        "preprocessing": mz.PREPROCESSING,
        "route_steps": len(route),
        "route_score": float(sum(r[4] for r in log)),
        "route_ram_rooms": list(rep["rooms"]),
        "ram_to_route": {str(r): k for k, r in enumerate(rep["rooms"], 1)},
        "ram_room_changes": seq,
        "route_events": events,
        "close": [f"room{k}" for k in range(1, far_from)],
        "far": [f"room{k}" for k in range(far_from, n + 1)],
        "num_states": len(states),
        "starts": starts,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "states.pkl").write_bytes(pickle.dumps(states))
    np.save(out / "frames.npy", np.stack(frames))
    np.save(out / "route.npy", np.frombuffer(route, np.uint8))
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    mz.load_starts.cache_clear()
    return meta


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=mz.ASSET_DIR)
    p.add_argument("--route", type=Path, default=None, help="route.npy to replay (default: --out/)")
    p.add_argument("--search", action="store_true", help="search a new route first")
    p.add_argument("--iterations", type=int, default=12000, help="search budget (iterations)")
    p.add_argument("--seed", type=int, default=0, help="search seed")
    p.add_argument("--target-rooms", type=int, default=9, help="stop the search at this many")
    p.add_argument("--far-from", type=int, default=7, help="first Far room (route numbering)")
    args = p.parse_args()
    argv = f"--far-from {args.far_from}"
    if args.search:
        t0 = time.time()
        route = search(args.iterations, args.seed, args.target_rooms)
        origin = {
            "search": "go-explore (this script)",
            "iterations": args.iterations,
            "seed": args.seed,
            "target_rooms": args.target_rooms,
            "seconds": round(time.time() - t0),
        }
        argv = (
            f"--search --iterations {args.iterations} --seed {args.seed} "
            f"--target-rooms {args.target_rooms} {argv}"
        )
    else:
        path = args.route or args.out / "route.npy"
        if not path.is_file():
            raise SystemExit(f"no route at {path}: run with --search to find one")
        route = np.load(path).astype(np.uint8).tobytes()
        old = path.parent / "meta.json"
        origin = {"search": f"unknown: route given as {path.name}"}
        if old.is_file():
            origin = json.loads(old.read_text()).get("route_origin", origin)
    meta = build(route, args.out, args.far_from, argv, origin)
    print(json.dumps({k: meta[k] for k in ("route_ram_rooms", "close", "far", "num_states")}))
    for s in meta["starts"]:
        print(
            f"{s['name']}: RAM room {s['ram_room']}, step {s['step']}, entered from the "
            f"{s['entrance']}, x {s['x']} y {s['y']}, items {s['inventory']:#04x}"
        )


if __name__ == "__main__":
    main()
