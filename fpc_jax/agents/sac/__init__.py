"""Soft actor-critic with per-stage heads and fused knowledge-retention penalties."""
