"""Games: specs and action codecs (light, no gymnasium), and in `envs.pipeline` the env pipelines policies play in."""

from envs.codec import DiscreteCodec, GridCodec
from envs.games import GAMES, GameSpec, get_game

__all__ = ["GAMES", "DiscreteCodec", "GameSpec", "GridCodec", "get_game"]
