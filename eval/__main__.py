"""python -m eval game=<carracing|spaceinvaders> policy=<vlm|expert|random|...> episodes=15 seed=100000"""

from pathlib import Path

from omegaconf import DictConfig

from agents import policy_options
from agents.workers import Player, load_player
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
    out = Path(cfg.out)
    check_writable(out)
    env_id, env_kwargs = spec.play_env_id(bool(cfg.fast_env)), sticky_kwargs(spec, cfg)
    if int(cfg.workers) <= 0:
        raise UserError(f"workers={cfg.workers}: play with at least one worker")
    player = Player(spec.name, cfg.policy, policy_options(cfg))
    spec, policy = load_player(player)
    seeds = episode_seeds(int(cfg.seed), int(cfg.episodes))
    evaluate(policy, spec, seeds, out, bool(cfg.video), env_id, env_kwargs, int(cfg.workers), player)


if __name__ == "__main__":
    main()
