"""Games: specs, codecs and the env pipelines policies play in."""
import ale_py
import gymnasium as gym

from envs.codec import DiscreteCodec, GridCodec
from envs.errors import UserError, exit_on_user_error
from envs.games import GAMES, REPO_ROOT, GameSpec, get_game
from envs.pipeline import FrameTap, frame_tap, make_play_env

gym.register_envs(ale_py)

__all__ = [
    "GAMES", "REPO_ROOT", "DiscreteCodec", "FrameTap", "GameSpec", "GridCodec", "UserError",
    "exit_on_user_error", "get_game", "frame_tap", "make_play_env",
]
