"""The floor every room stands on: errors, atomic writes, seed lists, name registries, the Hydra entry point
and the run/stage folder layout. Standard library and hydra only, so any process may import it."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]  # the checkout: shipped experts and checkpoints live here
