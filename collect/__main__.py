"""python -m collect game=<carracing|spaceinvaders> policy=<expert|random|vlm|...> episodes=30 seed=0 out=data/<game>"""

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from agents import policy_options
from agents.options import PlayConfig
from agents.workers import Player
from collect.collector import collect
from core.cli import command
from core.schema import option
from core.seeds import episode_seeds


@dataclass
class CollectConfig(PlayConfig):
    overwrite: bool = option()
    repair: bool = option()


@command("collect", CollectConfig)
def main(cfg: DictConfig) -> None:
    player = Player(cfg.game, cfg.policy, policy_options(cfg))
    seeds = episode_seeds(cfg.seed, cfg.episodes)
    collect(player, seeds, Path(cfg.out), cfg.workers, cfg.overwrite, cfg.repair, cfg.backend, cfg.address)


if __name__ == "__main__":
    main()
