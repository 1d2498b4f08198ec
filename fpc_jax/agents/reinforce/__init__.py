"""REINFORCE with a linear softmax-free (sigmoid) policy, for AppleRetrieval."""

from fpc_jax.agents.reinforce.losses import reinforce_loss, rewards_to_go
from fpc_jax.agents.reinforce.policy import log_prob, prob_right, sample_action
from fpc_jax.agents.reinforce.train import (
    ReinforceHyper,
    ReinforceStatic,
    make_train,
    rollout,
)

__all__ = [
    "ReinforceHyper",
    "ReinforceStatic",
    "log_prob",
    "make_train",
    "prob_right",
    "reinforce_loss",
    "rewards_to_go",
    "rollout",
    "sample_action",
]
