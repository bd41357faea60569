"""The entry point of every command: Hydra reads configs/<name>.yaml and the overrides, the command's schema
(core.schema) checks them before any work, and bad input exits 2 with one line."""

import functools

import hydra

from core import REPO_ROOT
from core.errors import exit_on_user_error
from core.schema import validate

CONFIGS_DIR = REPO_ROOT / "configs"
HYDRA_VERSION_BASE = "1.3"


def command(config_name: str, schema: type):
    """Decorator for a command's `main(cfg)`: `python -m <module> key=value ...` with configs/<config_name>.yaml,
    `cfg` checked against the dataclass `schema` first."""

    def decorate(main):
        @functools.wraps(main)
        def validated(cfg):
            validate(cfg, schema)
            return main(cfg)

        return hydra.main(config_path=str(CONFIGS_DIR), config_name=config_name, version_base=HYDRA_VERSION_BASE)(
            exit_on_user_error(validated)
        )

    return decorate
