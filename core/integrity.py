"""Files a command reads, checked whole before they are used, so that a damaged one is one clear line that says
which file and what to do, not a traceback from deep inside a loader."""

import json
import struct
from pathlib import Path

from core.errors import UserError

HEADER_LENGTH_BYTES = 8  # safetensors: a little-endian u64 header length, the JSON header, then the tensor bytes


def damaged(path: Path, key: str, error: object) -> UserError:
    return UserError(f"{key}: {path} is damaged ({error}); restore the checkpoint folder")


def read_json(path: Path, key: str) -> dict:
    """The JSON object in `path`; a file that does not parse to an object is a UserError."""
    try:
        value = json.loads(path.read_text())
        if not isinstance(value, dict):
            raise ValueError(f"a {type(value).__name__}, not an object")
        return value
    except (OSError, ValueError) as error:
        raise damaged(path, key, error) from None


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
        raise damaged(path, key, error) from None
