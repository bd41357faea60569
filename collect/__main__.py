"""python -m collect game=<carracing|spaceinvaders> policy=<expert|random|vlm|...> episodes=30 seed=0 out=data/<game>"""

from pathlib import Path

from omegaconf import DictConfig

from agents import policy_options
from agents.workers import Player
from collect.collector import collect
from core.cli import command
from core.errors import UserError
from core.files import check_writable
from core.seeds import episode_seeds
from envs.games import get_game


@command("collect")
def main(cfg: DictConfig) -> None:
    get_game(cfg.game)
    if int(cfg.episodes) <= 0:
        raise UserError(f"episodes={cfg.episodes}: collect at least one episode")
    if int(cfg.workers) <= 0:
        raise UserError(f"workers={cfg.workers}: play with at least one worker")
    out = Path(cfg.out)
    check_writable(out)
    player = Player(cfg.game, cfg.policy, policy_options(cfg))
    collect(
        player,
        episode_seeds(int(cfg.seed), int(cfg.episodes)),
        out,
        int(cfg.workers),
        bool(cfg.overwrite),
        bool(cfg.repair),
    )


if __name__ == "__main__":
    main()
