"""The entry point of every command: Hydra reads configs/<name>.yaml and the overrides, the command's schema
(core.schema) checks them before any work, and bad input exits 2 with one line."""

import functools
import sys

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from core import REPO_ROOT
from core.errors import UserError, exit_on_user_error, one_line
from core.schema import check_known, unknown_option, validate

CONFIGS_DIR = REPO_ROOT / "configs"
HYDRA_VERSION_BASE = "1.3"
# Hydra's flags that show things and run nothing (--help, --cfg job, ...), long and short
HYDRA_FLAGS = {"--help", "--hydra-help", "--version", "--cfg", "--resolve", "--package", "--info", "--shell-completion"}
HYDRA_FLAGS |= {"-h", "-c", "-p", "-i", "-sc"}
SWEEP_FLAGS = {"--multirun", "-m"}


def command(config_name: str, schema: type):
    """Decorator for a command's `main(cfg)`: `python -m <module> key=value ...` with configs/<config_name>.yaml,
    `cfg` checked against the dataclass `schema` first."""

    def decorate(main):
        @functools.wraps(main)
        def validated(cfg):
            check_known(cfg, schema, config_name)
            validate(cfg, schema)
            return main(cfg)

        hydra_main = hydra.main(config_path=str(CONFIGS_DIR), config_name=config_name, version_base=HYDRA_VERSION_BASE)(
            exit_on_user_error(validated)
        )

        def entry(cfg=None):
            if cfg is None:
                exit_on_user_error(check_overrides)(config_name, sys.argv[1:])
            return hydra_main(cfg)

        entry.__wrapped__ = hydra_main.__wrapped__
        entry.__doc__ = main.__doc__
        return entry

    return decorate


def check_overrides(config_name: str, args: list[str]) -> None:
    """Hydra's own refusals (an override it cannot parse, an option or config file that does not exist) as one
    UserError line, before Hydra starts. Hydra's own flags (`--help`, `--cfg job`) and `hydra.*` overrides are Hydra's;
    a sweep (`-m`) or another flag is refused."""
    flags = [arg for arg in args if arg.startswith("-")]
    for flag in flags:
        name = flag.split("=")[0]
        if name in SWEEP_FLAGS:
            raise UserError(
                f"{flag}: sweeps are not supported (every run would write the same out=); run the command once per "
                "setting, each with its own out="
            )
        if name not in HYDRA_FLAGS:
            raise UserError(
                f"{flag}: options are key=value, e.g. {flag.lstrip('-')}=VALUE (configs/{config_name}.yaml)"
            )
    if flags:
        return
    overrides = [arg for arg in args if not arg.lstrip("+~").startswith(("hydra.", "hydra/"))]
    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_override(override)
        except HydraException:
            raise UserError(
                f"cannot read the override {override!r}: write key=value, a list as key=[a,b] "
                "(https://hydra.cc/docs/advanced/override_grammar/basic)"
            ) from None
    try:
        with initialize_config_dir(config_dir=str(CONFIGS_DIR), version_base=HYDRA_VERSION_BASE):
            compose(config_name=config_name, overrides=overrides)
    except MissingConfigException as error:
        group, _, name = error.missing_cfg_file.rpartition("/")
        choices = ", ".join(error.options or [])
        raise UserError(f"{group}={name}: there is no configs/{group}/{name}.yaml; choose one of {choices}") from None
    except (HydraException, ValueError) as error:
        if isinstance(error.__cause__, ConfigAttributeError | ConfigKeyError):
            key = str(error).split("'")[1]  # "Could not override 'KEY'."
            raise unknown_option(key, config_name) from None
        raise UserError(f"the overrides do not fit configs/{config_name}.yaml: {one_line(str(error))}") from None
