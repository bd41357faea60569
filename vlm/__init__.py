"""vlmplay's vision-language model: CLIP vision tower, projector, SPHINX-V visual prompt encoder, LLM + LoRA.
Importing it registers VLMAutoConfig and VLMAutoModel with transformers' AutoConfig and AutoModel."""

from vlm import prompts
from vlm.choice import Choice
from vlm.collate import collate
from vlm.config import PRESETS, TRAINING_STAGES, VLMAutoConfig, VLMConfig, resolve_attn_implementation
from vlm.frame_cache import FrameCache
from vlm.model import VLM, VLMAutoModel
from vlm.prompt_encoder import KIND_BOX, KIND_POINT, jitter_box, normalize_box, normalize_point
from vlm.tokenizer import (
    IGNORE_INDEX,
    IMAGE_TOKEN_ID,
    PROMPT_TOKEN_ID,
    build_tokenizer,
    common_prefix_length,
    encode,
    load_tokenizer,
)
from vlm.vision import preprocess_images

__all__ = [
    "PRESETS",
    "TRAINING_STAGES",
    "VLM",
    "Choice",
    "FrameCache",
    "IGNORE_INDEX",
    "IMAGE_TOKEN_ID",
    "KIND_BOX",
    "KIND_POINT",
    "PROMPT_TOKEN_ID",
    "VLMAutoConfig",
    "VLMAutoModel",
    "VLMConfig",
    "build_tokenizer",
    "collate",
    "common_prefix_length",
    "encode",
    "jitter_box",
    "load_tokenizer",
    "normalize_box",
    "normalize_point",
    "preprocess_images",
    "prompts",
    "resolve_attn_implementation",
]
