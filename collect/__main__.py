"""python -m collect game=<carracing|spaceinvaders> policy=<expert|random> episodes=30 seed=0 out=data/<game>"""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from collect.collector import Player, collect
from envs import UserError, exit_on_user_error, get_game
from eval.evaluate import check_writable


@hydra.main(config_path="../configs", config_name="collect", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    get_game(cfg.game)
    if int(cfg.episodes) <= 0:
        raise UserError(f"episodes={cfg.episodes}: collect at least one episode")
    if int(cfg.workers) <= 0:
        raise UserError(f"workers={cfg.workers}: play with at least one worker")
    out = Path(cfg.out)
    check_writable(out)
    seeds = [int(cfg.seed) + index for index in range(int(cfg.episodes))]
    collect(
        Player(cfg.game, cfg.policy, cfg.expert, cfg.deterministic),
        seeds,
        out,
        int(cfg.workers),
        bool(cfg.overwrite),
        bool(cfg.repair),
    )


if __name__ == "__main__":
    main()
