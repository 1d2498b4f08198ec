"""fpc_jax: JAX-vectorized study of forgetting of pre-trained capabilities (FPC) in RL."""

__version__ = "0.1.0"
