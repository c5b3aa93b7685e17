"""Model architectures named in specs, bring-your-own loaders, fingerprints and artifacts."""

from distillery.models.artifacts import load_model, model_card, save_model
from distillery.models.registry import build_model, count_params, fingerprint

__all__ = ["build_model", "count_params", "fingerprint", "load_model", "model_card", "save_model"]
