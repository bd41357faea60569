"""python -m eval game=<carracing|spaceinvaders> policy=<vlm|expert|random|...> episodes=15 seed=100000"""

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from agents import policy_options
from agents.options import PlayConfig
from agents.workers import Player, load_player
from core.cli import command
from core.errors import UserError
from core.schema import option
from core.seeds import episode_seeds
from envs.games import GameSpec, get_game
from eval.evaluate import evaluate


def sticky_kwargs(spec: GameSpec, cfg: DictConfig) -> dict | None:
    if not cfg.sticky_actions:
        return None
    if spec.sticky_actions is None:
        raise UserError(f"sticky_actions=true: {spec.name} has no sticky-action protocol (Atari games do)")
    return spec.sticky_actions


@dataclass
class EvalConfig(PlayConfig):
    video: bool = option()
    sticky_actions: bool = option()
    fast_env: bool = option()


@command("eval", EvalConfig)
def main(cfg: DictConfig) -> None:
    spec = get_game(cfg.game)
    out = Path(cfg.out)
    env_id, env_kwargs = spec.play_env_id(cfg.fast_env), sticky_kwargs(spec, cfg)
    player = Player(spec.name, cfg.policy, policy_options(cfg))
    spec, policy = load_player(player)
    seeds = episode_seeds(cfg.seed, cfg.episodes)
    evaluate(policy, spec, seeds, out, cfg.video, env_id, env_kwargs, cfg.workers, player, cfg.backend, cfg.address)


if __name__ == "__main__":
    main()
