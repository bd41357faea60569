"""python -m eval game=<carracing|spaceinvaders> policy=<vlm|expert|random|...> episodes=15 seed=100000"""

from pathlib import Path

import torch
from omegaconf import DictConfig

from agents import load_policy, policy_options
from core.cli import command
from core.errors import UserError
from core.files import check_writable
from core.seeds import episode_seeds
from envs.games import GameSpec, get_game
from eval.evaluate import evaluate


def sticky_kwargs(spec: GameSpec, cfg: DictConfig) -> dict | None:
    if not cfg.sticky_actions:
        return None
    if spec.sticky_actions is None:
        raise UserError(f"sticky_actions=true: {spec.name} has no sticky-action protocol (Atari games do)")
    return spec.sticky_actions


@command("eval")
def main(cfg: DictConfig) -> None:
    spec = get_game(cfg.game)
    if int(cfg.episodes) <= 0:
        raise UserError(f"episodes={cfg.episodes}: evaluate at least one episode")
    torch.set_num_threads(int(cfg.threads))
    out = Path(cfg.out)
    check_writable(out)
    env_id, env_kwargs = spec.play_env_id(bool(cfg.fast_env)), sticky_kwargs(spec, cfg)
    policy = load_policy(cfg.policy, spec, **policy_options(cfg))
    seeds = episode_seeds(int(cfg.seed), int(cfg.episodes))
    evaluate(policy, spec, seeds, out, bool(cfg.video), env_id, env_kwargs)


if __name__ == "__main__":
    main()
