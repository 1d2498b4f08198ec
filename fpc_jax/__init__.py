"""fpc_jax: JAX-vectorized study of forgetting of pre-trained capabilities (FPC) in RL fine-tuning."""

__version__ = "0.1.0"
