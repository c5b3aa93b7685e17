"""Serving: teacher and student behind HTTP with a gradual, gated rollout (Ray Serve)."""
