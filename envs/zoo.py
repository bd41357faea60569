"""RL-Zoo3's experiment folder layout, as rl_zoo3.train writes it and enjoy.py reads it:

ALGO/ENV_1/ENV.zip                   the agent (an SB3 zip)
ALGO/ENV_1/ENV/config.yml            hyperparameters, including the env pipeline (wrappers, frame stack, normalize)
ALGO/ENV_1/ENV/args.yml              the command-line arguments (algo, env)
ALGO/ENV_1/ENV/vecnormalize.pkl      VecNormalize statistics, when the pipeline normalises
ALGO/ENV_1/*.monitor.csv             training episodes (Monitor files)
"""

from pathlib import Path

CONFIG_FILE = "config.yml"
ARGS_FILE = "args.yml"
VECNORMALIZE_FILE = "vecnormalize.pkl"
MONITOR_GLOB = "*.monitor.csv"
ATARI_MARKER = "NoFrameskip"  # the zoo's Atari env ids (SpaceInvadersNoFrameskip-v4) and its "atari" recipes


def agent_zip(folder: Path, env_id: str) -> Path:
    return folder / f"{env_id}.zip"


def params_dir(folder: Path, env_id: str) -> Path:
    """The folder beside the zip that holds config.yml, args.yml and vecnormalize.pkl."""
    return folder / env_id


def is_atari(env_id: str) -> bool:
    """Whether RL-Zoo3 treats the env as Atari (AtariWrapper recipes, stochastic actions at test time)."""
    return ATARI_MARKER in env_id
