"""The FPC study with PPO on the real NetHack (NLE 1.3.0), host-stepped (issue 13).

pi* is behaviour cloning of the rule-based bot (``fpc_jax.envs.nle_bot``) into a small MLP on the
flat observation (one-hot glyph classes of a 9 x 9 crop + 19 bottom-line stats), with its critic
fitted to the bot's discounted returns; fine-tuning runs every method x seed with PPO from the
game start (Dlvl 1, Close) through ``host_ppo``'s engine. Far = Dlvl >= ``far_depth``, rebuilt by
replaying stored bot prefixes (no save states). Metrics: stage 0 ``dlvl1`` = a game-start episode
leaves Dlvl 1; stage 1 (Far) = a Far-start episode reaches Dlvl ``far_depth + 1``; full success =
a game-start episode reaches Dlvl ``far_depth + 1``; plus the in-game score gained per episode and
the deepest Dlvl reached (the paper's Figure 4 shows score and depth). Deviations from the paper:
docs/nethack.md.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fpc_jax.agents.ppo.networks import make_ppo_networks
from fpc_jax.agents.ppo.update import PPOHyper, stack_runs, train_state_from_params
from fpc_jax.envs.nle_vec import make_nethack
from fpc_jax.experiments import config as cfglib
from fpc_jax.experiments import host_ppo, nethack_report, ppo_study, results
from fpc_jax.experiments.checkpoint import CheckpointError
from fpc_jax.experiments.nethack_config import (  # noqa: F401 (the schema lives there)
    ENV,
    NetHackStudyConfig,
    default_out,
    network,
)


class NetHackGame:
    """``HostGame`` of NetHack: start specs are ``"close"`` (a fresh game) or ``"far"`` (a bot
    prefix replayed to its first step on Dlvl >= ``far_depth``), the same for every env."""

    def __init__(self, far_depth: int) -> None:
        self.far_depth = far_depth
        self.stages = ("dlvl1", f"dlvl{far_depth}")
        self.far_idx = (1,)

    def open(self, cfg, num_envs, seed, start, max_steps=None):
        vec, _ = make_nethack(
            num_envs=num_envs,
            seed=seed,
            workers=min(cfg.workers, num_envs),
            **cfg.env_config(start, max_steps),
        )
        try:
            return vec, vec.reset()
        except BaseException:
            vec.close()
            raise

    def play(self, cfg, policy, runs, start, key) -> dict[str, np.ndarray]:
        """One episode per env (``runs x eval_episodes`` envs, the same games at every call):
        ``max_depth`` and ``score`` gained, each ``(R, E)``."""
        r, e = runs, cfg.eval_episodes
        seed = cfg.eval_seed + (start == "far")
        vec, obs = self.open(cfg, r * e, seed, start, cfg.eval_max_steps)
        done, gained = np.zeros(r * e, bool), np.zeros(r * e)
        depth = np.zeros(r * e, np.int64)
        try:
            for t in range(cfg.eval_max_steps):
                a = policy(obs.reshape(r, e, -1), jax.random.fold_in(key, t))
                obs, reward, term, trunc, info = vec.step(a.reshape(-1))
                gained += np.where(done, 0.0, reward)
                new = (term | trunc) & ~done
                depth[new] = info["max_depth"][new]
                done |= new
                if done.all():
                    break
        finally:
            vec.close()
        return {"max_depth": depth.reshape(r, e), "score": gained.reshape(r, e)}

    def evaluate(self, cfg, policy, runs, key) -> dict[str, np.ndarray]:
        close = self.play(cfg, policy, runs, "close", jax.random.fold_in(key, 0))
        far = self.play(cfg, policy, runs, "far", jax.random.fold_in(key, 1))
        deeper = self.far_depth + 1
        stage = np.stack(
            [(close["max_depth"] >= 2).mean(-1), (far["max_depth"] >= deeper).mean(-1)], -1
        ).astype(np.float32)
        return {
            "eval/stage_success": stage,
            "eval/all_solved": (close["max_depth"] >= deeper).mean(-1).astype(np.float32),
            "eval/stages_solved_frac": stage.mean(-1),
            "eval/far_success": stage[:, 1],
            "eval/score_close": close["score"].mean(-1),
            "eval/score_far": far["score"].mean(-1),
            "eval/max_depth_close": close["max_depth"],
            "eval/max_depth_far": far["max_depth"],
        }


# ---------------------------------------------------------------------------------------------
# pi*: behaviour cloning of the bot


def discounted_returns(reward: np.ndarray, episode: np.ndarray, gamma: float) -> np.ndarray:
    """Per-step discounted return within each episode (an episode's last recorded step ends it)."""
    out, acc = np.zeros(len(reward), np.float32), 0.0
    for i in range(len(reward) - 1, -1, -1):
        last = i == len(reward) - 1 or episode[i + 1] != episode[i]
        acc = reward[i] + (0.0 if last else gamma * acc)
        out[i] = acc
    return out


@functools.cache
def _bc_epoch(config, lr: float, batch: int):
    """``epoch(params, opt_state, obs, action, ret, key) -> (params, opt_state, loss, acc)``:
    one shuffled pass of cross-entropy (actor) + squared error (critic) minibatch steps."""
    nets, opt = make_ppo_networks(config), optax.adam(lr)

    def loss(params, obs, action, ret):
        stage = jnp.zeros(obs.shape[0], jnp.int32)
        logits = jax.vmap(nets.actor_apply, in_axes=(None, 0, 0))(params["actor"], obs, stage)
        value = jax.vmap(nets.critic_values, in_axes=(None, 0, 0))(params["critic"], obs, stage)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, action).mean()
        acc = (logits.argmax(-1) == action).mean()
        return ce + 0.5 * ((value[:, 0] - ret) ** 2).mean(), acc

    def step(carry, idx, obs, action, ret):
        params, opt_state = carry
        (value, acc), grads = jax.value_and_grad(loss, has_aux=True)(
            params, obs[idx], action[idx], ret[idx]
        )
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), (value, acc)

    @jax.jit
    def epoch(params, opt_state, obs, action, ret, key):
        n = (obs.shape[0] // batch) * batch
        perm = jax.random.permutation(key, obs.shape[0])[:n].reshape(-1, batch)
        body = functools.partial(step, obs=obs, action=action, ret=ret)
        (params, opt_state), (losses, accs) = jax.lax.scan(body, (params, opt_state), perm)
        return params, opt_state, losses.mean(), accs.mean()

    return epoch, opt, jax.jit(loss)


def clone_bot(cfg: NetHackStudyConfig, config, key, log=print) -> tuple[dict, dict]:
    """BC of the bot: ``(params {"actor", "critic"}, stats)``; 1 in 10 games is held out."""
    from fpc_jax.envs.nle_bot import bot_dataset

    seeds = [(c, c + 10**6) for c in range(cfg.bot_first_seed, cfg.bot_first_seed + cfg.bot_games)]
    t0 = time.perf_counter()
    env = {
        k: v
        for k, v in cfg.env_config("close", cfg.bot_max_steps).items()
        if k in ("character", "crop", "obs_mode", "stall_limit")
    }
    data = bot_dataset(seeds, max_steps=cfg.bot_max_steps, **env)
    ret = discounted_returns(data["reward"] * cfg.reward_scale, data["episode"], cfg.gamma)
    held = data["episode"] % 10 == 9
    log(
        f"[pretrain] {len(data['action'])} bot (obs, action) pairs from {cfg.bot_games} games "
        f"in {time.perf_counter() - t0:.0f}s; {held.mean():.0%} held out"
    )
    epoch, opt, loss = _bc_epoch(config, cfg.bc_lr, cfg.bc_batch)
    actor, critic = make_ppo_networks(config).init(key)
    params = {"actor": actor, "critic": critic}
    opt_state = opt.init(params)
    train = [jnp.asarray(x[~held]) for x in (data["obs"], data["action"], ret)]
    test = [jnp.asarray(x[held]) for x in (data["obs"], data["action"], ret)]
    for ep in range(cfg.bc_epochs):
        params, opt_state, tr_loss, tr_acc = epoch(
            params, opt_state, *train, jax.random.fold_in(key, ep)
        )
        te_loss, te_acc = loss(params, *test) if held.any() else (np.nan, np.nan)
        log(
            f"[pretrain] BC epoch {ep + 1}/{cfg.bc_epochs}: train loss {float(tr_loss):.3f} "
            f"acc {float(tr_acc):.3f}; held-out loss {float(te_loss):.3f} acc {float(te_acc):.3f}"
        )
    stats = {
        "bc_pairs": len(data["action"]),
        "bc_train_accuracy": float(tr_acc),
        "bc_heldout_accuracy": float(te_acc),
        "bc_far_fraction": float((data["depth"] >= cfg.far_depth).mean()),
        "bot_games": cfg.bot_games,
        "bot_max_depth": int(data["depth"].max()),
    }
    return params, stats


def bot_far_reference(cfg: NetHackStudyConfig) -> dict[str, float]:
    """The bot itself on the Far set, from the asset's own games: the fraction of entries that
    reach Dlvl ``far_depth`` and then ``far_depth + 1`` within ``eval_max_steps`` more actions."""
    from fpc_jax.envs.nle_prefixes import PrefixSet

    p = PrefixSet.load(cfg.prefixes or None)
    at, nxt = p.first_step[cfg.far_depth], p.first_step.get(cfg.far_depth + 1)
    far = at >= 0
    if nxt is None:
        return {"bot_far_entries": int(far.sum())}
    ok = (nxt >= 0) & (nxt - at <= cfg.eval_max_steps)
    return {"bot_far_entries": int(far.sum()), "bot_far_success": float(ok[far].mean())}


# ---------------------------------------------------------------------------------------------
# Entry points


def pretrain(cfg: NetHackStudyConfig, out_dir: str | Path, log=print) -> Path:
    """pi* = BC of the bot, evaluated on the Far and Close starts; writes ``out/policy``."""
    out_dir = results.make_run_dir(out_dir)
    cfglib.dump(cfg, out_dir / "config.yaml")
    config, hyper = network(cfg), PPOHyper.create(**cfg.hyper_kwargs())
    key, t0 = jax.random.key(cfg.seed), time.perf_counter()
    params, stats = clone_bot(cfg, config, jax.random.fold_in(key, 0), log)
    state = train_state_from_params(config, hyper, params["actor"], params["critic"])
    game = NetHackGame(cfg.far_depth)
    act, _ = host_ppo.make_learner(config, cfg.epochs, cfg.minibatches, cfg.clip_value_loss)
    ev = game.evaluate(
        cfg, host_ppo.make_policy(act, stack_runs([state])), 1, jax.random.fold_in(key, 1)
    )
    meta = {
        "env": ENV,
        "far_depth": cfg.far_depth,
        "crop": cfg.crop,
        "character": cfg.character,
        "far_success": float(ev["eval/far_success"][0]),
        "close_success": float(ev["eval/stage_success"][0, 0]),
        "full_success": float(ev["eval/all_solved"][0]),
        "score_far": float(ev["eval/score_far"][0]),
        "score_close": float(ev["eval/score_close"][0]),
        "eval_episodes": cfg.eval_episodes,
        "eval_max_steps": cfg.eval_max_steps,
        **stats,
        **bot_far_reference(cfg),
    }
    ppo_study.save_policy(out_dir / "policy", state, meta)
    wall = time.perf_counter() - t0
    results.write_json(
        out_dir / "run_info.json",
        {
            **results.environment_info(),
            "wall_s": wall,
            **meta,
            "max_depth_far": ev["eval/max_depth_far"][0].tolist(),
            "max_depth_close": ev["eval/max_depth_close"][0].tolist(),
        },
    )
    log(
        f"[pretrain] {wall:.0f}s; pi* Far success (Dlvl {cfg.far_depth} -> "
        f"{cfg.far_depth + 1}) {meta['far_success']:.3f}, Close (leave Dlvl 1) "
        f"{meta['close_success']:.3f}, {cfg.eval_episodes} episodes each; bot on the asset's "
        f"Far entries {meta.get('bot_far_success', float('nan')):.3f}"
    )
    return out_dir / "policy"


def finetune(cfg: NetHackStudyConfig, out_dir: str | Path, log=print) -> Path:
    """Fine-tune every method x seed from the game start; summary.csv, curves, plots. Resumes
    (or extends) the run in ``out_dir`` if there is one."""
    host_ppo.check_resume(cfg, out_dir, "finetune", cfg.finetune_steps)  # before any write
    out_dir = results.make_run_dir(out_dir)
    cfglib.dump(cfg, out_dir / "config.yaml")
    config, hyper = network(cfg), PPOHyper.create(**cfg.hyper_kwargs())
    path, pre = host_ppo.load_pretrained(cfg, config, out_dir)
    for k in ("env", "far_depth", "crop", "character"):
        if pre.meta.get(k) != getattr(cfg, k):
            raise CheckpointError(
                f"{str(path)!r} was pre-trained with {k}={pre.meta.get(k)!r}, "
                f"this config has {getattr(cfg, k)!r}"
            )
    game = NetHackGame(cfg.far_depth)
    data = host_ppo.far_states(cfg, game, config, pre.state, "far", out_dir, log)
    labels, curves = host_ppo.finetune_study(
        cfg, game, config, hyper, pre.state, data, "close", out_dir, log, {"checkpoint": str(path)}
    )
    rows = nethack_report.score_rows(labels, curves)
    results.write_csv(out_dir / "scores.csv", rows, nethack_report.SCORE_COLUMNS)
    nethack_report.plot_nethack(cfg, labels, curves, out_dir)
    for line in nethack_report.score_table(cfg, rows):
        log(line)
    return out_dir
