"""RL agents: REINFORCE (AppleRetrieval) and SAC with fused knowledge retention."""
