"""PPO (categorical actor, value critic, optional RND) with fused knowledge retention."""
