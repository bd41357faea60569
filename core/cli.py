"""The entry point of every command: Hydra reads configs/<name>.yaml and the overrides, bad input exits 2."""

import hydra

from core import REPO_ROOT
from core.errors import exit_on_user_error

CONFIGS_DIR = REPO_ROOT / "configs"
HYDRA_VERSION_BASE = "1.3"


def command(config_name: str):
    """Decorator for a command's `main(cfg)`: `python -m <module> key=value ...` with configs/<config_name>.yaml."""

    def decorate(main):
        return hydra.main(config_path=str(CONFIGS_DIR), config_name=config_name, version_base=HYDRA_VERSION_BASE)(
            exit_on_user_error(main)
        )

    return decorate
