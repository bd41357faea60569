"""A checkpoint folder (VLM.save_pretrained) checked before it is loaded, so that a damaged one is one clear line:
config.json parses and holds the three configs, model.safetensors is as long as its header says, the
tokenizer files are there and parse."""

from pathlib import Path

from core.errors import UserError
from core.integrity import check_safetensors, damaged, read_json
from vlm.config import VLMConfig
from vlm.model import CONFIG_FILE, WEIGHTS_FILE

CONFIG_PARTS = ("vlm", "vision", "llm")  # what save_pretrained writes into config.json
TOKENIZER_FILE = "tokenizer_config.json"


def checked_checkpoint_config(folder: Path, key: str = "checkpoint") -> VLMConfig:
    """The VLMConfig of the checkpoint `folder`, after checking that the folder is whole; else a UserError."""
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE) if not (folder / name).is_file()]
    if missing:
        raise UserError(
            f"{key}={folder} is not a VLM checkpoint (no {', '.join(missing)}): "
            "give a folder written by `python -m train` (each stage's model is STAGE/final)"
        )
    config = read_config(folder / CONFIG_FILE, key)
    check_safetensors(folder / WEIGHTS_FILE, key)
    check_tokenizer(folder, key)
    return config


def read_config(path: Path, key: str) -> VLMConfig:
    meta = read_json(path, key)
    try:
        parts = [part for part in CONFIG_PARTS if not isinstance(meta.get(part), dict)]
        if parts:
            raise ValueError(f"no {', '.join(parts)} section")
        return VLMConfig.from_dict(meta["vlm"])
    except (ValueError, TypeError, AttributeError) as error:
        raise damaged(path, key, error) from None


def check_tokenizer(folder: Path, key: str) -> None:
    """Every tokenizer JSON file (tokenizer.json, tokenizer_config.json, ...) parses."""
    for path in sorted(folder.glob("tokenizer*.json")):
        read_json(path, key)
