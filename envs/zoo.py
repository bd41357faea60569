"""RL-Zoo3's experiment folder layout, as rl_zoo3.train writes it and enjoy.py reads it:

ALGO/ENV_1/ENV.zip                   the agent (an SB3 zip)
ALGO/ENV_1/ENV/config.yml            hyperparameters, including the env pipeline (wrappers, frame stack, normalize)
ALGO/ENV_1/ENV/args.yml              the command-line arguments (algo, env)
ALGO/ENV_1/ENV/vecnormalize.pkl      VecNormalize statistics, when the pipeline normalises
ALGO/ENV_1/*.monitor.csv             training episodes (Monitor files)
"""

import ast
import collections
from pathlib import Path

import yaml

CONFIG_FILE = "config.yml"
ARGS_FILE = "args.yml"
VECNORMALIZE_FILE = "vecnormalize.pkl"
MONITOR_GLOB = "*.monitor.csv"
OBS_RMS_FILE = "obs_rms.pkl"  # older RL-Zoo3 folders: observation statistics without a config.yml
ORDERED_DICT_TAG = "tag:yaml.org,2002:python/object/apply:collections.OrderedDict"  # how RL-Zoo3 dumps its dicts
ATARI_MARKER = "NoFrameskip"  # the zoo's Atari env ids (SpaceInvadersNoFrameskip-v4) and its "atari" recipes


def agent_zip(folder: Path, env_id: str) -> Path:
    return folder / f"{env_id}.zip"


def params_dir(folder: Path, env_id: str) -> Path:
    """The folder beside the zip that holds config.yml, args.yml and vecnormalize.pkl."""
    return folder / env_id


def is_atari(env_id: str) -> bool:
    """Whether RL-Zoo3 treats the env as Atari (AtariWrapper recipes, stochastic actions at test time)."""
    return ATARI_MARKER in env_id


class ZooYAMLLoader(yaml.SafeLoader):
    """YAML's safe types plus the one Python tag RL-Zoo3 writes (an OrderedDict); any other tag is refused,
    so a crafted config.yml or args.yml cannot build objects (run code) when it is read."""


def _ordered_dict(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> collections.OrderedDict:
    return collections.OrderedDict(*loader.construct_sequence(node, deep=True))


ZooYAMLLoader.add_constructor(ORDERED_DICT_TAG, _ordered_dict)


def read_zoo_yaml(path: Path) -> dict:
    """An args.yml or config.yml; a yaml.YAMLError for a malformed file or a tag RL-Zoo3 does not write."""
    try:
        values = yaml.load(path.read_text(), Loader=ZooYAMLLoader)  # noqa: S506 - a safe loader, see above
    except yaml.MarkedYAMLError as error:
        raise yaml.YAMLError(f"{error.problem}, line {error.problem_mark.line + 1}") from None
    if not isinstance(values, dict):
        raise yaml.YAMLError(f"{path.name} holds no mapping")
    return values


def literal_normalize(normalize):
    """config.yml's `normalize`: a bool, a dict, or a dict written as a Python literal ("{'norm_obs': False}")."""
    return ast.literal_eval(normalize) if isinstance(normalize, str) else normalize


def saved_hyperparams(stats_dir: Path) -> dict:
    """The test-time hyperparameters of an agent folder's ENV/ folder, as rl_zoo3.utils.get_saved_hyperparams
    returns them (norm_reward=False, test_mode=True), read with the safe loader."""
    if not stats_dir.is_dir():
        return {}
    config = stats_dir / CONFIG_FILE
    if config.is_file():
        hyperparams = read_zoo_yaml(config)
        hyperparams["normalize"] = hyperparams.get("normalize", False)
    else:
        hyperparams = {"normalize": (stats_dir / OBS_RMS_FILE).is_file()}
    normalize = literal_normalize(hyperparams["normalize"])
    if normalize:
        if isinstance(normalize, dict):
            kwargs = dict(normalize)
            if isinstance(hyperparams["normalize"], str):
                kwargs["norm_reward"] = False
        else:
            kwargs = {"norm_obs": normalize, "norm_reward": False}
        hyperparams["normalize_kwargs"] = kwargs
    return hyperparams
