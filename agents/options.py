"""The options of every command that plays episodes (eval, collect), as the schema core.schema checks them."""

from dataclasses import dataclass

from agents.registry import POLICIES
from agents.workers import BACKENDS, check_backend
from core.schema import option, writable_folder
from core.seeds import SEED_MAX, check_last_seed
from envs.games import check_game


def known_policy(key: str, name: str) -> None:
    POLICIES.get(name)


@dataclass
class PlayConfig:
    """The options of every command that plays episodes (eval, collect): the schema core.schema checks."""

    game: str = option(check=check_game)
    policy: str = option(check=known_policy)
    expert: str | None = option()  # the policy checks the folder when it is built, before any episode
    checkpoint: str | None = option()
    beta: float | None = option(minimum=0.0, maximum=1.0)
    deterministic: bool | None = option()
    episodes: int = option(minimum=1)
    seed: int = option(minimum=0, maximum=SEED_MAX)  # Gymnasium seeds are non-negative
    workers: int = option(minimum=1)
    backend: str = option(choices=BACKENDS, check=check_backend)
    address: str | None = option()  # backend=ray: the cluster's; None: RAY_ADDRESS, else a local instance
    out: str = option(check=writable_folder)

    @staticmethod
    def check_together(cfg) -> None:
        check_last_seed("seed", cfg.seed, cfg.episodes)
