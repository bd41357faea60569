"""An RL-Zoo3 agent folder played exactly as rl_zoo3's enjoy.py plays it."""

import hashlib
import io
import os
import socket
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import yaml
from rl_zoo3 import ALGOS

from agents.base import Observation, Policy
from agents.registry import register_policy
from core.errors import UserError, quoted
from envs.games import GameSpec
from envs.pipeline import make_play_env, normalization_stats
from envs.zoo import ARGS_FILE, CONFIG_FILE, agent_zip, is_atari, params_dir, read_zoo_yaml, saved_hyperparams

HUB_PREFIX = "hub:"
HUB_CACHE = Path("~/.cache/vlmplay/hub_agents").expanduser()
HUB_CONNECT_TIMEOUT_S = 3
OFF_POLICY_ALGOS = {"dqn", "qrdqn", "ddpg", "sac", "td3", "tqc", "crossq"}
PIPELINE_KEYS = ("env_wrapper", "frame_stack", "normalize", "normalize_kwargs", "vec_env_wrapper")
# As enjoy.py: schedules saved by older Pythons do not unpickle, and evaluation needs none of them.
EVAL_CUSTOM_OBJECTS = {"learning_rate": 0.0, "lr_schedule": lambda _: 0.0, "clip_range": lambda _: 0.0}


def _hub_reachable() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", ""):
        return False
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname
    try:
        socket.create_connection((host, 443), timeout=HUB_CONNECT_TIMEOUT_S).close()
        return True
    except OSError:
        return False


def download_from_hub(hub_id: str) -> Path:
    """`hub:ORG/ALGO-ENV` -> the RL-Zoo3 folder that rl_zoo3.load_from_hub writes."""
    from rl_zoo3.load_from_hub import download_from_hub as zoo_download
    from rl_zoo3.utils import EnvironmentName

    organization, _, repo = hub_id.removeprefix(HUB_PREFIX).partition("/")
    algo, _, env_id = repo.partition("-")
    if not (organization and algo in ALGOS and env_id):
        raise UserError(
            f"{hub_id!r} is not a hub agent id: write it as hub:ORG/ALGO-ENV, "
            "e.g. hub:sb3/ppo-SpaceInvadersNoFrameskip-v4"
        )
    folder = HUB_CACHE / algo / f"{env_id}_1"
    if not folder.is_dir():
        if not _hub_reachable():
            raise UserError(
                f"cannot download {hub_id}: the model hub is not reachable from this machine. On a machine "
                f"with network run `python -m rl_zoo3.load_from_hub --algo {algo} --env {env_id} -orga "
                f"{organization} -f logs/` and pass the folder it writes (logs/{algo}/{env_id}_1) as expert="
            )
        zoo_download(
            algo=algo,
            env_name=EnvironmentName(env_id),
            exp_id=1,
            folder=str(HUB_CACHE),
            organization=organization,
            repo_name=None,
            force=False,
        )
    return folder


def read_expert_folder(folder: Path) -> tuple[str, str]:
    """(algo, env id) of an RL-Zoo3 experiment folder ALGO/ENV_N, checking the files it must hold."""
    help_text = f"an RL-Zoo3 experiment folder holds ENV.zip and ENV/{CONFIG_FILE} (as rl_zoo3.train writes them)"
    if not folder.is_dir():
        raise UserError(f"expert folder {folder} does not exist: {help_text}")
    args_file = next(folder.glob(f"*/{ARGS_FILE}"), None)
    if args_file is not None:
        try:
            args = read_zoo_yaml(args_file)
            return args["algo"], args["env"]
        except (yaml.YAMLError, OSError, KeyError) as error:
            raise UserError(f"{args_file} is malformed ({error}): {help_text}") from None
    algo, env_id = folder.parent.name, folder.name.rsplit("_", 1)[0]
    if algo not in ALGOS:
        raise UserError(
            f"cannot tell the algorithm of {folder} (no ENV/{ARGS_FILE}, "
            f"parent folder is not an algo name): {help_text}"
        )
    return algo, env_id


@register_policy("expert")
class ExpertPolicy(Policy):
    """Plays an RL-Zoo3 agent in its own pipeline (config.yml), stochastic for Atari as the zoo does.

    expert=: the agent folder (default: the game's in experts/) or hub:ORG/ALGO-ENV; deterministic=:
    greedy or sampled actions (default: RL-Zoo3's choice for the game)."""

    options = ("expert", "deterministic")

    @classmethod
    def build(cls, spec: GameSpec, expert: str | None = None, deterministic: bool | None = None) -> "ExpertPolicy":
        return cls(expert or spec.default_expert_path, spec, deterministic=deterministic)

    def __init__(self, folder: str | Path, spec: GameSpec, deterministic: bool | None = None):
        folder = download_from_hub(str(folder)) if str(folder).startswith(HUB_PREFIX) else Path(folder)
        self.algo, self.env_id = read_expert_folder(folder)
        same_game = {env.split("-v")[0] for env in (spec.env_id, *spec.env_aliases)}
        if self.env_id.split("-v")[0] not in same_game:
            raise UserError(
                f"expert {folder} was trained on {self.env_id}, not on the game {spec.name} ({spec.env_id})"
            )
        model_path = agent_zip(folder, self.env_id)
        if not model_path.is_file():
            raise UserError(
                f"expert folder {folder} has no {model_path.name}: copy the agent zip there or pass the right folder"
            )
        self.stats_dir = params_dir(folder, self.env_id)
        try:
            hyperparams = saved_hyperparams(self.stats_dir)
        except (yaml.YAMLError, OSError, ValueError, SyntaxError) as error:
            raise UserError(
                f"{self.stats_dir / CONFIG_FILE} is unreadable ({error}): restore it from the training run"
            ) from None
        if "env_wrapper" not in hyperparams and "frame_stack" not in hyperparams:
            raise UserError(
                f"{self.stats_dir / CONFIG_FILE} is missing or declares no env pipeline: "
                "restore it from the training run"
            )
        self.pipeline = {key: hyperparams[key] for key in PIPELINE_KEYS if key in hyperparams}
        normalization_stats(self.pipeline, self.stats_dir)  # read now: a damaged file stops before any episode
        zoo_default = not is_atari(spec.env_id)
        self.deterministic = zoo_default if deterministic is None else deterministic
        # Results and datasets name a non-default choice, so the two are never mixed up.
        mode = "" if self.deterministic == zoo_default else ("-greedy" if self.deterministic else "-sampled")
        self.policy_id = f"expert-{self.algo}-{folder.name}{mode}"
        self.model_bytes = model_path.read_bytes()
        self.load_kwargs = {"buffer_size": 1} if self.algo in OFF_POLICY_ALGOS else {}
        self.reset(seed=0)
        self.check_pipeline_fits(spec)

    def check_pipeline_fits(self, spec: GameSpec) -> None:
        """Build config.yml's pipeline and give the agent its first observation once (greedily: no random draw),
        so that a wrapper that does not import or a frame stack the agent was not trained on stops here, before
        any episode."""
        try:
            venv = make_play_env(spec, self.pipeline, seed=0, stats_dir=self.stats_dir)
            try:
                self.model.predict(venv.reset(), deterministic=True)
            finally:
                venv.close()
        except (AttributeError, ImportError, ValueError, KeyError, TypeError) as error:
            raise UserError(
                f"{self.stats_dir / CONFIG_FILE}: its env pipeline does not fit the agent ({quoted(error)}); "
                "restore it from the training run"
            ) from None

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.model_bytes).hexdigest()

    def reset(self, seed: int) -> None:
        # Loading with `seed=` seeds python, numpy, torch and the action space, then builds the network
        # (which draws from torch's generator): the random stream rl_zoo3's enjoy.py starts from.
        try:
            self.model = ALGOS[self.algo].load(
                io.BytesIO(self.model_bytes),
                custom_objects=EVAL_CUSTOM_OBJECTS,
                device="cpu",
                seed=seed,
                **self.load_kwargs,
            )
        except (ValueError, KeyError, RuntimeError, EOFError, OSError, zipfile.BadZipFile) as error:
            raise UserError(
                f"the agent zip of {self.policy_id} does not load ({error}): re-export it with rl_zoo3"
            ) from None
        self.recurrent_state = None

    def act(self, observation: Observation):
        action, self.recurrent_state = self.model.predict(
            observation.agent_obs,
            state=self.recurrent_state,
            episode_start=np.array([observation.episode_start]),
            deterministic=self.deterministic,
        )
        return action[0]
