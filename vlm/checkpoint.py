"""A checkpoint folder (VLM.save_pretrained) checked before it is loaded, so that a damaged one is one clear line:
config.json parses and holds the three configs, model.safetensors is as long as its header says, the
tokenizer files are there and parse, and a folder in peft's adapter layout holds both adapter files whole."""

from pathlib import Path

from core import REPO_ROOT
from core.errors import UserError, quoted
from core.integrity import check_safetensors, damaged, read_json
from core.schema import writable_folder
from vlm.config import VLMConfig
from vlm.model import ADAPTER_CONFIG_FILE, CONFIG_FILE, VLM, WEIGHTS_FILE
from vlm.tokenizer import TOKENIZER_CONFIG_FILE

CONFIG_PARTS = ("vlm", "vision", "llm")  # what save_pretrained writes into config.json
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"  # peft's name, beside ADAPTER_CONFIG_FILE

SHIPPED_DIR = REPO_ROOT / "checkpoints"  # the shipped checkpoints (game_G, pvp_tiny, ...), tracked by git


def checked_checkpoint_config(folder: Path, key: str = "checkpoint") -> VLMConfig:
    """The VLMConfig of the checkpoint `folder`, after checking that the folder is whole; else a UserError."""
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_CONFIG_FILE) if not (folder / name).is_file()]
    if missing:
        raise UserError(
            f"{key}={folder} is not a VLM checkpoint (no {', '.join(missing)}): "
            "give a folder written by `python -m train` (each stage's model is STAGE/final)"
        )
    config = read_config(folder / CONFIG_FILE, key)
    check_safetensors(folder / WEIGHTS_FILE, key)
    check_tokenizer(folder, key)
    if (folder / ADAPTER_CONFIG_FILE).is_file():
        read_json(folder / ADAPTER_CONFIG_FILE, key)
        check_safetensors(folder / ADAPTER_WEIGHTS_FILE, key)
    return config


def read_config(path: Path, key: str) -> VLMConfig:
    meta = read_json(path, key)
    try:
        parts = [part for part in CONFIG_PARTS if not isinstance(meta.get(part), dict)]
        if parts:
            raise ValueError(f"no {', '.join(parts)} section")
        config = VLMConfig.from_dict(meta["vlm"])
        if config.games is not None and not is_games_record(config.games):
            raise ValueError(f"vlm.games={config.games!r} is not {{game: [action words]}}")
        return config
    except (ValueError, TypeError, AttributeError) as error:
        raise damaged(path, key, error) from None


def is_games_record(games) -> bool:
    return isinstance(games, dict) and all(
        isinstance(words, list) and all(isinstance(word, str) for word in words) for words in games.values()
    )


def check_tokenizer(folder: Path, key: str) -> None:
    """Every tokenizer JSON file (tokenizer.json, tokenizer_config.json, ...) parses."""
    for path in sorted(folder.glob("tokenizer*.json")):
        read_json(path, key)


def load_checked(folder: Path, key: str = "checkpoint") -> VLM:
    """VLM.from_pretrained(folder) after the checks above; weights that do not fit the config (a renamed or
    reshaped tensor) or a tokenizer that does not load are one UserError, not a traceback from the loader."""
    checked_checkpoint_config(folder, key)
    try:
        return VLM.from_pretrained(str(folder))
    except (RuntimeError, KeyError, ValueError, TypeError) as error:
        raise UserError(f"{key}={folder} does not load ({quoted(error)}); restore the checkpoint folder") from None


def checkpoint_out(key: str, out: str) -> None:
    """The schema check of a folder a VLM checkpoint is written to: a new folder, or a VLM checkpoint (which is
    replaced) that is not one of the shipped ones, never a folder of other files."""
    writable_folder(key, out)
    path = Path(out).expanduser()
    if path.is_dir() and any(path.iterdir()) and not (path / CONFIG_FILE).is_file():
        raise UserError(f"{key}={out} holds files that are not a VLM checkpoint: choose a new folder for {key}=")
    if path.resolve().is_relative_to(SHIPPED_DIR.resolve()) and path.exists():
        raise UserError(
            f"{key}={out} is a shipped checkpoint: write to a new folder, and copy it over the shipped one by hand "
            "once it has been evaluated"
        )
