"""A command's configuration schema: a dataclass whose fields give each option's type and its range, choices or
check. `validate(cfg, Schema)` runs before the command does any work; a bad value stops it with one line saying
what is wrong and what to do (a UserError). Values of the right kind written differently (`run=7`, a single
`data=FOLDER`) are normalised in `cfg` (the string "7", the list [FOLDER]).

    @dataclass
    class EvalConfig:
        game: str = option(choices=GAMES)
        episodes: int = option(minimum=1)
        checkpoint: str | None = option(check=existing_path)
        video: bool = option()

A field whose type is another schema is checked inside it; `dict[str, Schema]` checks each value of a mapping
(e.g. every stage of a recipe). Options the schema does not name are left to the command.
"""

import dataclasses
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from omegaconf import DictConfig, ListConfig

from core.errors import UserError
from core.files import check_writable

Check = Callable[[str, object], None]  # (key, value) -> None, or a UserError


def option(
    *, minimum: float | None = None, maximum: float | None = None, choices: Iterable | None = None, check=None
) -> dataclasses.Field:
    """A schema field: a number within [minimum, maximum], one of `choices`, and/or passing `check(key, value)`."""
    return dataclasses.field(
        metadata={
            "minimum": minimum,
            "maximum": maximum,
            "choices": None if choices is None else tuple(choices),
            "check": check,
        }
    )


def check_known(cfg: DictConfig, schema: type, config_name: str) -> None:
    """Every top-level option in `cfg` is a field of `schema`: one added with `+name=...` that no code reads is
    refused rather than silently ignored."""
    unknown = sorted(set(cfg.keys()) - {field.name for field in dataclasses.fields(schema)})
    if unknown:
        raise unknown_option(unknown[0], config_name)


def unknown_option(key: str, config_name: str) -> UserError:
    return UserError(f"{key} is not an option of {config_name}: see configs/{config_name}.yaml for the options")


def validate(cfg: DictConfig, schema: type, prefix: str = "") -> None:
    """Check (and normalise) every field of `schema` in `cfg`; the first bad one raises a UserError. A schema whose
    options limit each other (e.g. the last seed a command plays) checks them together in its `check_together(cfg)`,
    after each one is checked alone."""
    for field in dataclasses.fields(schema):
        key = prefix + field.name
        value = cfg.get(field.name)
        checked = check_value(key, value, typing.get_type_hints(schema)[field.name], field.metadata)
        if checked is not value and not isinstance(checked, DictConfig):
            cfg[field.name] = checked
    check_together = getattr(schema, "check_together", None)
    if check_together is not None:
        check_together(cfg)


def check_value(key: str, value, kind, rules: Mapping):
    """`value` checked against the type `kind` and the field's `rules`; -> the value, normalised."""
    optional, kind = split_optional(kind)
    if value is None:
        if optional or kind is typing.Any:
            return None
        raise UserError(f"{key} is not given: set {key}=VALUE ({describe(kind, rules)})")
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, DictConfig):
            raise UserError(f"{key}={value!r} is not a group of options: give {key}.FIELD=VALUE")
        validate(value, kind, key + ".")
        return value
    if typing.get_origin(kind) is dict:
        return check_mapping(key, value, typing.get_args(kind)[1])
    value = check_type(key, value, kind, rules)
    check_rules(key, value, kind, rules)
    return value


def split_optional(kind) -> tuple[bool, object]:
    """(whether None is allowed, the type without None) of an annotation like `int | None`."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        members = [member for member in typing.get_args(kind) if member is not type(None)]
        return len(members) < len(typing.get_args(kind)), members[0] if len(members) == 1 else typing.Any
    return False, kind


def check_mapping(key: str, value, value_kind) -> DictConfig:
    if not isinstance(value, DictConfig):
        raise UserError(f"{key}={value!r} is not a group of options: give {key}.NAME.FIELD=VALUE")
    for name, item in value.items_ex(resolve=False):
        checked = check_value(f"{key}.{name}", item, value_kind, {})
        if checked is not item and not isinstance(checked, DictConfig):
            value[name] = checked
    return value


def check_type(key: str, value, kind, rules: Mapping):
    if kind is typing.Any:
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise UserError(f"{key}={value!r}: give true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{key}={value!r} is not a whole number: give {describe(kind, rules)}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserError(f"{key}={value!r} is not a number: give {describe(kind, rules)}")
        return value
    if kind is str:
        if isinstance(value, DictConfig | ListConfig):
            raise UserError(f"{key}={value!r}: give one value, not a list or a group")
        return value if isinstance(value, str) else str(value)
    if typing.get_origin(kind) is list:
        items = value if isinstance(value, ListConfig) else [value]
        item_kind = typing.get_args(kind)[0]
        checked = [check_type(f"{key}[{index}]", item, item_kind, {}) for index, item in enumerate(items)]
        return checked if checked != list(items) or not isinstance(value, ListConfig) else value
    raise TypeError(f"schema field {key}: unsupported type {kind}")


def check_rules(key: str, value, kind, rules: Mapping) -> None:
    minimum, maximum, choices = rules.get("minimum"), rules.get("maximum"), rules.get("choices")
    if minimum is not None and value < minimum or maximum is not None and value > maximum:
        raise UserError(f"{key}={value} is out of range: give {describe(kind, rules)}")
    if choices is not None and value not in choices:
        raise UserError(f"{key}={value!r}: choose one of {', '.join(map(str, choices))}")
    if rules.get("check") is not None:
        rules["check"](key, value)


def describe(kind, rules: Mapping) -> str:
    """What a field takes, in words: "a whole number >= 1", "one of a, b", "true or false"."""
    if rules.get("choices") is not None:
        return f"one of {', '.join(map(str, rules['choices']))}"
    words = {bool: "true or false", int: "a whole number", float: "a number", str: "a value"}.get(kind, "a list")
    bounds = [f">= {rules['minimum']}"] if rules.get("minimum") is not None else []
    bounds += [f"<= {rules['maximum']}"] if rules.get("maximum") is not None else []
    return " ".join([words, " and ".join(bounds)]).strip()


# Checks shared by the commands' schemas.


def existing_path(key: str, value) -> None:
    """A file or folder the command will read."""
    path = Path(str(value)).expanduser()
    if not path.exists():
        raise UserError(f"{key}={value}: {path} does not exist; give an existing folder")


def existing_paths(key: str, values) -> None:
    for index, value in enumerate(values):
        existing_path(f"{key}[{index}]", value)


def positive(key: str, value: float) -> None:
    if value <= 0:
        raise UserError(f"{key}={value} is out of range: give a number > 0")


def writable_folder(key: str, value) -> None:
    """An output folder: it, or the nearest folder above it that exists, must be writable; an empty value (which
    would mean the current folder) is refused."""
    if not str(value).strip():
        raise UserError(f"{key} is empty: give the folder to write to, e.g. {key}=results/run1")
    check_writable(Path(str(value)).expanduser(), key)
