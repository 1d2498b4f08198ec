"""The Meta-World CPU sweep's training loop: R runs on R x E real Meta-World envs stepped on the
host (worker processes), one jitted policy call per vector step, one jitted call per burst that
writes the transitions into every run's replay and does the SAC updates. Used by
``robotic_sequence.sweep``."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fpc_jax.agents.sac.networks import SACConfig
from fpc_jax.agents.sac.replay import buffer_add
from fpc_jax.agents.sac.train import make_update_burst
from fpc_jax.agents.sac.update import SACTrainState
from fpc_jax.envs.metaworld_cpu import MetaWorldSequenceVec
from fpc_jax.experiments.host_rollouts import (
    ACT_DIM,
    FIELDS,
    OBS_DIM,
    Acting,
    next_stage,
    record,
    to_batch,
)


def make_learn(config: SACConfig, updates: int):
    """Jitted, vmapped over runs: write a burst of transitions, then ``updates`` SAC updates."""

    burst = make_update_burst(config, updates)

    def learn(sac: SACTrainState, buf, transitions, anchors, coefs, hyper, key, do_update):
        buf = buffer_add(buf, transitions)
        sac, metrics = burst(sac, buf, anchors, coefs, hyper, key, do_update)
        return sac, buf, metrics

    in_axes = (0, 0, 0, None, 0, 0, 0, None)
    return jax.jit(jax.vmap(learn, in_axes=in_axes), donate_argnums=(0, 1))


class HostLoop:
    """Training of R runs on R x E host envs: ``burst()`` = ``update_every`` vector env steps
    (one jitted policy call each), then one jitted call writing the transitions into every run's
    replay and doing ``update_every * E`` SAC updates per run."""

    def __init__(
        self,
        cfg: Any,
        config: SACConfig,
        seq,
        acting: Acting,
        sac,
        buf,
        anchors,
        coefs,
        hyper,
        key,
        runs: int,
        random_steps: np.ndarray | None = None,
    ) -> None:
        self.cfg, self.acting, self.runs, self.e = cfg, acting, runs, cfg.envs_per_run
        # per run: env steps of uniform-random actions at the start (scratch: CW's 10k)
        self.random_steps = np.broadcast_to(
            cfg.finetune_start_steps if random_steps is None else random_steps, (runs,)
        )
        self.sac, self.buf, self.anchors, self.coefs, self.hyper = sac, buf, anchors, coefs, hyper
        self.key = key
        self.learn = make_learn(config, cfg.update_every * self.e)
        self.vec = MetaWorldSequenceVec(
            config=seq, num_envs=runs * self.e, seed=cfg.seed + 1, workers=cfg.workers
        )
        self.ids = np.asarray(seq.stage_ids)
        self.rng = np.random.default_rng(cfg.seed)
        self.step = 0
        self.metrics: list[dict[str, jax.Array]] = []
        self.successes = np.zeros((runs, max(seq.stage_ids) + 1))  # per head, since train_stats()
        self.visits = np.zeros_like(self.successes)  # env steps per head, since train_stats()
        self.reset()

    def train_stats(self) -> dict[str, np.ndarray]:
        """Per-run means of the SAC/retention statistics over the updating bursts since the last
        call (``train/...``: losses, penalties, alpha, Q) and each stage's successes in the
        training episodes (``train/stage_successes``, runs x stages), then forgets them."""
        visits, self.visits = self.visits, np.zeros_like(self.visits)
        out = {"train_coverage": visits / np.maximum(visits.sum(1, keepdims=True), 1)}
        if not self.metrics:
            return out
        stats = jax.device_get(jax.tree.map(lambda *x: jnp.mean(jnp.stack(x), 0), *self.metrics))
        self.metrics = []
        out |= {f"train/{k}": np.asarray(v) for k, v in stats.items()}
        out["train/stage_successes"], self.successes = self.successes, np.zeros_like(self.successes)
        return out

    def reset(self) -> None:
        n = self.runs * self.e
        self.obs = self.vec.reset()
        self.stage, self.pos = np.full(n, self.ids[0]), np.zeros(n, int)

    def burst(self) -> None:
        cfg, runs, e = self.cfg, self.runs, self.e
        store: dict[str, list[np.ndarray]] = {f: [] for f in FIELDS}
        for _ in range(cfg.update_every):
            self.key, k_act = jax.random.split(self.key)
            rand = np.repeat(self.step < self.random_steps, e)  # (runs * e,)
            if rand.all():
                a = self.rng.uniform(-1, 1, (runs * e, ACT_DIM))
            else:
                a = np.asarray(
                    self.acting.sample(
                        self.sac.actor_params,
                        self.obs.reshape(runs, e, OBS_DIM),
                        self.stage.reshape(runs, e),
                        jax.random.split(k_act, runs * e).reshape(runs, e),
                    )
                ).reshape(runs * e, ACT_DIM)
                if rand.any():
                    a = np.where(rand[:, None], self.rng.uniform(-1, 1, a.shape), a)
            nxt, r, term, trunc, info = self.vec.step(a)
            record(store, self.obs, a, r, info, (runs, e))
            np.add.at(self.visits, (np.arange(runs * e) // e, self.stage), 1)
            np.add.at(
                self.successes, (np.arange(runs * e) // e, info["stage"]), info["stage_success"]
            )
            self.stage, self.pos = next_stage(self.ids, self.pos, info, term | trunc)
            self.obs = nxt
            self.step += 1
        tr = to_batch({f: np.concatenate(v, axis=1) for f, v in store.items()})
        self.key, k_upd = jax.random.split(self.key)
        keys, go = jax.random.split(k_upd, runs), self.step > cfg.update_after
        self.sac, self.buf, metrics = self.learn(
            self.sac, self.buf, tr, self.anchors, self.coefs, self.hyper, keys, go
        )
        if go:
            self.metrics.append(metrics)

    def close(self) -> None:
        self.vec.close()
