"""Games: specs, codecs and the env pipelines policies play in."""

import ale_py
import gymnasium as gym

from envs.codec import DiscreteCodec, GridCodec
from envs.errors import UserError, exit_on_user_error
from envs.fast_car_racing import FAST_CAR_RACING_ID, register_fast_car_racing
from envs.games import GAMES, REPO_ROOT, GameSpec, get_game
from envs.pipeline import FrameTap, frame_tap, make_play_env

gym.register_envs(ale_py)
register_fast_car_racing()

__all__ = [
    "FAST_CAR_RACING_ID",
    "GAMES",
    "REPO_ROOT",
    "DiscreteCodec",
    "FrameTap",
    "GameSpec",
    "GridCodec",
    "UserError",
    "exit_on_user_error",
    "get_game",
    "frame_tap",
    "make_play_env",
]
