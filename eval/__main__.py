"""python -m eval game=<carracing|spaceinvaders> policy=<expert|random|vlm> episodes=15 seed=100000"""

from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from agents import load_policy
from envs import UserError, exit_on_user_error, get_game
from eval.evaluate import check_writable, evaluate


@hydra.main(config_path="../configs", config_name="eval", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    spec = get_game(cfg.game)
    if int(cfg.episodes) <= 0:
        raise UserError(f"episodes={cfg.episodes}: evaluate at least one episode")
    for option, kind in (("expert", "expert"), ("checkpoint", "vlm")):
        if cfg[option] and cfg.policy != kind:
            raise UserError(
                f"{option}={cfg[option]} is read by policy={kind} only, and policy={cfg.policy}: add policy={kind}"
            )
    torch.set_num_threads(int(cfg.threads))
    out = Path(cfg.out)
    check_writable(out)
    policy = load_policy(
        cfg.policy, spec, expert=cfg.expert, checkpoint=cfg.checkpoint, deterministic=cfg.deterministic
    )
    seeds = [int(cfg.seed) + index for index in range(int(cfg.episodes))]
    evaluate(policy, spec, seeds, out, video=bool(cfg.video), env_id=spec.play_env_id(bool(cfg.fast_env)))


if __name__ == "__main__":
    main()
