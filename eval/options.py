"""The options of the commands that ask a VLM about the images of a dataset (eval.reconstruct, eval.segment,
eval.refer), as the schema core.schema checks them."""

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.files import TMP_SUFFIX
from core.schema import existing_path, option, writable_folder
from core.seeds import SEED_MAX, check_seed_list


@dataclass
class ImageEvalConfig:
    checkpoint: str | None = option()
    images: str | None = option(check=existing_path)
    seeds: Any = option(check=check_seed_list)
    n: int = option(minimum=1)
    seed: int = option(minimum=0, maximum=SEED_MAX)
    batch: int = option(minimum=1)
    threads: int = option(minimum=1)
    progress: bool = option()
    out: str = option(check=writable_folder)
    overwrite: bool = option()


RESULTS_FILE = "results.json"


def is_own_output(folder: Path, result_key: str, png_name: re.Pattern) -> bool:
    """Whether `folder` holds only what one of these commands writes: PNGs named by index and a results.json
    holding `result_key` (or what a killed run left at their temporary names)."""
    names = [path.name.removesuffix(TMP_SUFFIX) for path in folder.iterdir()]
    if not all(name == RESULTS_FILE or png_name.fullmatch(name) for name in names):
        return False
    try:
        results = json.loads((folder / RESULTS_FILE).read_text())
    except FileNotFoundError:
        return True  # the PNGs of a run stopped before its results.json
    except (OSError, ValueError):
        return False
    return isinstance(results, dict) and result_key in results
