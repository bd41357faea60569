"""One GameSpec per game: everything that makes a game, and the only place its words are written.

The env id, the expert's env pipeline and folder, the frames a VLM sees, the action codec (discrete
codes <-> env actions <-> action words) and the game's objective and tips (which `vlm.prompts` turns
into the paper's instruction). A new game is one GameSpec here plus its expert folder. This module
imports no gymnasium: training processes read game specs too.
"""

from dataclasses import dataclass, field
from pathlib import Path

from core import REPO_ROOT
from core.errors import UserError
from envs.codec import DiscreteCodec, GridCodec


@dataclass(frozen=True)
class GameSpec:
    name: str  # the game id used on the command line and in prompts
    env_id: str  # the Gymnasium env every evaluation runs on
    frame_shape: tuple[int, int, int]  # one raw RGB frame the VLM sees
    n_stack: int  # frames per VLM observation (paper: CarRacing 2, SpaceInvaders 4)
    frame_max_pool: bool  # Atari sprites flicker: a frame is the max of the last two raw frames
    decisions_per_second: int  # policy decisions per second of game time (video fps)
    codec: DiscreteCodec | GridCodec
    objective: str
    tips: str
    # The env pipeline of the default expert, as RL-Zoo3's config.yml declares it. Policies that
    # bring no config.yml (random, VLM) play in this pipeline, so every policy sees the same game.
    pipeline: dict = field(hash=False)
    pipeline_side: int  # the side of the square grey frames that pipeline gives the expert (BC-CNN's input)
    default_expert: str  # RL-Zoo3 experiment folder, relative to the repo root
    env_aliases: tuple[str, ...] = ()  # other env ids that are the same game (e.g. a faster twin)
    # Reference scores a return table is read against: the default expert's mean return on the evaluation
    # seeds 100000-100014 (`python -m eval policy=expert`), and the (human, random) scores of the Atari
    # literature for the human-normalised score, where the game has them.
    expert_return: float = 0.0
    # Env kwargs of the modern ALE protocol (sticky actions, Machado et al. 2018) where the game has one.
    sticky_actions: dict | None = None
    human_random_scores: tuple[float, float] | None = None

    @property
    def action_names(self) -> tuple[str, ...]:
        return self.codec.names

    @property
    def default_expert_path(self) -> Path:
        return REPO_ROOT / self.default_expert

    def play_env_id(self, fast: bool) -> str:
        """The env to play in: the faster twin where there is one and `fast` asks for it."""
        return self.env_aliases[0] if fast and self.env_aliases else self.env_id


CARRACING = GameSpec(
    name="carracing",
    env_id="CarRacing-v3",
    frame_shape=(96, 96, 3),
    n_stack=2,
    frame_max_pool=False,
    decisions_per_second=50,
    # Chosen by benchmarks/codec_roundtrip.py: the ppo_lstm expert steers in small amounts and
    # drives with gas around 0.04; this grid keeps 92 % of its return, grids with gas 1 lose all.
    codec=GridCodec(
        steer=(
            ("hardleft", -0.4),
            ("left", -0.15),
            ("slightleft", -0.06),
            ("nudgeleft", -0.02),
            ("straight", 0.0),
            ("nudgeright", 0.02),
            ("slightright", 0.06),
            ("right", 0.15),
            ("hardright", 0.4),
        ),
        pedal=(("coast", 0.0, 0.0), ("slow", 0.03, 0.0), ("gas", 0.06, 0.0)),
    ),
    objective=(
        "You drive the red car on a grey road seen from above. Objective: visit every road tile "
        "as fast as you can; each new tile earns points and every frame costs a little."
    ),
    tips=(
        "stay on the grey road, the green grass is slow; slow down before sharp turns and steer "
        "into the curve early; keep the gas on along straight road."
    ),
    pipeline={
        "env_wrapper": [
            {"rl_zoo3.wrappers.YAMLCompatResizeObservation": {"shape": [64, 64]}},
            {"gymnasium.wrappers.transform_observation.GrayscaleObservation": {"keep_dim": True}},
        ],
        "frame_stack": 2,
        "normalize": "{'norm_obs': False, 'norm_reward': True}",
    },
    pipeline_side=64,
    default_expert="experts/ppo_lstm/CarRacing-v3_1",
    env_aliases=("CarRacingFast-v3",),
    expert_return=892.57,
)

SPACEINVADERS = GameSpec(
    name="spaceinvaders",
    env_id="SpaceInvadersNoFrameskip-v4",
    frame_shape=(210, 160, 3),
    n_stack=4,
    frame_max_pool=True,
    decisions_per_second=15,
    codec=DiscreteCodec(names=("NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE")),
    objective=(
        "You control the green laser cannon at the bottom of the screen. Objective: shoot the rows "
        "of invaders before they reach the ground; each invader hit earns points."
    ),
    tips=(
        "dodge the bombs the invaders drop, hide under the orange shields, fire as often as you "
        "can, the mystery ship crossing the top is worth extra points."
    ),
    pipeline={"env_wrapper": ["stable_baselines3.common.atari_wrappers.AtariWrapper"], "frame_stack": 4},
    pipeline_side=84,  # AtariWrapper's WarpFrame
    default_expert="experts/ppo/SpaceInvadersNoFrameskip-v4_1",
    expert_return=563.67,
    human_random_scores=(1668.7, 148.0),
    sticky_actions={"repeat_action_probability": 0.25},
)

GAMES = {spec.name: spec for spec in (CARRACING, SPACEINVADERS)}


def get_game(name: str) -> GameSpec:
    if name not in GAMES:
        raise UserError(f"unknown game {name!r}: choose one of {', '.join(GAMES)}")
    return GAMES[name]


def check_game(key: str, name: str) -> None:
    """The schema check (core.schema) of a game= option."""
    get_game(name)
