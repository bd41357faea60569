"""A checkpoint folder (VLM.save_pretrained) checked before it is loaded, so that a damaged one is one clear line:
config.json parses and holds the three configs, model.safetensors is as long as its header says, the
tokenizer files are there."""

import json
import struct
from pathlib import Path

from core.errors import UserError
from vlm.config import VLMConfig
from vlm.model import CONFIG_FILE, WEIGHTS_FILE

CONFIG_PARTS = ("vlm", "vision", "llm")  # what save_pretrained writes into config.json
TOKENIZER_FILE = "tokenizer_config.json"
HEADER_LENGTH_BYTES = 8  # safetensors: a little-endian u64 header length, the JSON header, then the tensor bytes


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
    return config


def read_config(path: Path, key: str) -> VLMConfig:
    try:
        meta = json.loads(path.read_text())
        parts = [part for part in CONFIG_PARTS if not isinstance(meta.get(part), dict)]
        if parts:
            raise ValueError(f"no {', '.join(parts)} section")
        return VLMConfig.from_dict(meta["vlm"])
    except (OSError, ValueError, TypeError, AttributeError) as error:
        raise UserError(f"{key}: {path} is damaged ({error}); restore the checkpoint folder") from None


def check_safetensors(path: Path, key: str) -> None:
    """The file holds a readable header and every tensor byte it lists (a truncated copy does not)."""
    try:
        with open(path, "rb") as file:
            (header_length,) = struct.unpack("<Q", file.read(HEADER_LENGTH_BYTES))
            header = json.loads(file.read(header_length))
        data_end = max(
            (entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"), default=0
        )
        expected = HEADER_LENGTH_BYTES + header_length + data_end
        if path.stat().st_size != expected:
            raise ValueError(f"{path.stat().st_size} bytes, its header says {expected}")
    except (OSError, ValueError, struct.error, KeyError, TypeError, IndexError, AttributeError) as error:
        raise UserError(f"{key}: {path} is damaged ({error}); restore the checkpoint folder") from None
