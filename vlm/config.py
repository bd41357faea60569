"""Model configuration: one dataclass, two presets, the training-stage switches, and config.json as
transformers.AutoConfig reads it."""

import dataclasses
import json
import os
from dataclasses import dataclass, field

import torch
from transformers import AutoConfig, PretrainedConfig

from core.errors import UserError
from vlm import marks
from vlm.prompts import GAME_INSTRUCTIONS

VISION_STEMS = ("patch", "conv")
TOWER_CONFIG_FILE = "config.json"
MODEL_TYPE = "vlmplay"  # config.json's top-level model_type: how transformers.AutoConfig finds VLMAutoConfig


@dataclass
class VLMConfig:
    # Vision tower. With vision_path set, a local Hugging Face CLIP or SigLIP directory (the dual encoder or
    # its vision model, vision.VISION_FOLDER_TYPES) is loaded and the vision_* sizes and patch_size below are
    # ignored: its config gives them.
    vision_path: str | None = None
    image_size: int = 64  # square model input in pixels; the tower's position grid is interpolated to it
    patch_size: int = 8
    vision_hidden_size: int = 192
    vision_intermediate_size: int = 768
    vision_layers: int = 3
    vision_heads: int = 3
    # How pixels become patch tokens: "patch" = CLIP's linear patch embedding (pretrained towers, and
    # every checkpoint saved before this field); "conv" = a stack of 3x3 stride-2 convolutions
    # (vision.ConvStem), which a tower trained from scratch needs to see SpaceInvaders' small sprites.
    vision_stem: str = "patch"

    # Projector: 4 neighbouring visual tokens -> one LLM token. "2x2" = spatial merge,
    # "1x4" = 4 consecutive tokens of a row (MiniGPT-v2).
    merge: str = "2x2"

    # LLM. With llm_path set, a local Hugging Face causal LM directory (with its tokenizer) of a type in
    # llm.LLM_TYPES is loaded and the llm_* sizes below are ignored; otherwise a LLaMA of these sizes is built
    # from scratch with the project's own tokenizer.
    llm_path: str | None = None
    llm_hidden_size: int = 192
    llm_intermediate_size: int = 512
    llm_layers: int = 4
    llm_heads: int = 3
    max_position_embeddings: int = 1024
    tokenizer_vocab_size: int = 1024

    # LoRA on the LLM (0 = none, e.g. after merge_lora()).
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: tuple[str, ...] = ("q_proj", "v_proj")

    # SPHINX-V visual prompt encoder.
    num_prompt_slots: int = 10
    fourier_features: int = 128  # frequencies per corner -> 2x that (sin, cos) dims per corner
    fourier_scale: float = 1.0

    # The game template's instruction: "paper" = the objective, tips and action space before the
    # game id (PAE-LaMM's template); "none" = the images, the game id and the question only. The
    # instruction is the same in every sample, so a model trained from scratch learns nothing from
    # it, and it is most of a prompt's tokens (CarRacing: 243 with it, 60 without). Training records it here.
    game_instruction: str = "paper"
    # The games the game task trained it to play, each with its action words in code order (training records
    # them); a policy refuses any other game. Empty: not recorded (checkpoints saved before this field).
    games: dict[str, list[str]] = field(default_factory=dict)
    # How visual prompt marks reach the model (vlm.marks.FORMS), recorded by the visual_prompt task it trained with;
    # eval.refer asks in this form unless told otherwise.
    mark_form: str = marks.DEFAULT_FORM
    # The class prior the segmentation task trained under, recorded by it: the fraction of its questions asked
    # inside a mask, and each phrase's mean fraction of the 64x64 grid in its training frames. Training asks
    # inside far more often than a tiny object covers the grid, so vlm.scoring.MaskPredictor shifts its decision
    # back to the grid's own prior. Empty: not recorded (the plain likelier answer).
    segmentation_inside_fraction: float | None = None
    segmentation_phrase_fractions: dict[str, float] = field(default_factory=dict)

    # Runtime. dtype is that of the two towers; projector, prompt encoder and LoRA stay float32.
    dtype: str = "float32"
    attn_implementation: str | None = None  # None = automatic, see resolve_attn_implementation
    seed: int = 0  # initialisation of everything built from scratch

    def __post_init__(self):
        if self.vision_stem not in VISION_STEMS:
            raise ValueError(f"vision_stem={self.vision_stem!r}: choose one of {VISION_STEMS}")
        if self.game_instruction not in GAME_INSTRUCTIONS:
            raise ValueError(f"game_instruction={self.game_instruction!r}: choose one of {GAME_INSTRUCTIONS}")
        if self.mark_form not in marks.FORMS:
            raise ValueError(f"mark_form={self.mark_form!r}: choose one of {tuple(marks.FORMS)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "VLMConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown VLMConfig fields {unknown}; known fields: {sorted(known)}")
        values = dict(values)
        if "lora_target_modules" in values:
            values["lora_target_modules"] = tuple(values["lora_target_modules"])
        return cls(**values)

    @classmethod
    def preset(cls, name: str, **overrides) -> "VLMConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


# The tiny preset shrunk further (VLMConfig.preset("tiny", **MICRO_SIZES)): a training step takes milliseconds on
# the same code paths. The tests' model and the benchmarks' --smoke runs.
MICRO_SIZES = dict(
    llm_hidden_size=64,
    llm_intermediate_size=128,
    llm_layers=2,
    llm_heads=2,
    vision_hidden_size=48,
    vision_intermediate_size=96,
    vision_layers=1,
    vision_heads=2,
    lora_r=4,
    fourier_features=16,
)

PRESETS = {
    # Initialised from scratch, trains on a 2-core CPU: 3.90M parameters with the default tokenizer.
    "tiny": dict(vision_stem="conv"),
    # The paper's size: CLIP ViT-L/14 at 448 px (32x32 patches -> 256 LLM tokens) and a
    # LLaMA-2-7B, both from local directories; LoRA r=64 on q/v as in MiniGPT-v2.
    "full": dict(
        vision_path="checkpoints/clip-vit-large-patch14",
        llm_path="checkpoints/Llama-2-7b-chat-hf",
        image_size=448,
        lora_r=64,
        lora_alpha=16,
        dtype="bfloat16",
    ),
}

# Which parts train in each stage; pass as model.set_trainable(**TRAINING_STAGES[name]).
TRAINING_STAGES = {
    # Tiny preset from scratch: nothing is pretrained, so everything learns.
    "scratch": dict(vision=True, projector=True, llm=True, llm_lora=True, prompt_encoder=True, prompt_projector=True),
    # PAE-LaMM pixel value prediction, paper section 3.2.
    "pvp_stage1": dict(projector=True, llm_lora=True),
    "pvp_stage2": dict(vision=True, projector=True, llm_lora=True),
    "pvp_stage3": dict(projector=True, llm_lora=True),
    # SPHINX-V: (1) align prompts with the LLM frozen, (2) SFT with the prompt encoder frozen.
    "vp_stage1": dict(prompt_encoder=True, prompt_projector=True),
    "vp_stage2": dict(prompt_projector=True, llm_lora=True),
    # Game imitation fine-tuning.
    "game": dict(projector=True, llm_lora=True),
}


def resolve_attn_implementation(requested: str | None) -> str:
    """flash_attention_2 when flash-attn is installed and a CUDA GPU is present, else sdpa."""
    if requested is not None:
        return requested
    if not torch.cuda.is_available():
        return "sdpa"
    try:
        import flash_attn  # noqa: F401
    except (ImportError, OSError):  # not installed, or built against another CUDA/torch
        return "sdpa"
    return "flash_attention_2"


class MissingFolderError(UserError, FileNotFoundError):
    """A tower or tokenizer folder that is not there: a UserError, and a FileNotFoundError as it always was."""


def load_tower_config(path: str, what: str, supported_types: tuple[str, ...]) -> PretrainedConfig:
    """The config of the local Hugging Face model folder `path` (nothing is downloaded), of one of supported_types."""
    config_file = os.path.join(path, TOWER_CONFIG_FILE)
    if not os.path.isfile(config_file):
        raise MissingFolderError(
            f"{what} path {path!r} is not a local Hugging Face model directory (no {TOWER_CONFIG_FILE}). "
            f"Models are never downloaded: save one there with save_pretrained() on a machine with "
            f"internet access, or point the config at an existing directory."
        )
    try:
        with open(config_file) as f:
            model_type = json.load(f).get("model_type")
    except (OSError, ValueError, AttributeError) as error:
        raise UserError(f"{what}: {config_file} is not a readable model config ({error})") from None
    if model_type not in supported_types:
        raise UserError(
            f"{what} path {path!r} holds a model of type {model_type!r}; supported types: {', '.join(supported_types)}"
        )
    return AutoConfig.from_pretrained(path, local_files_only=True)


class VLMAutoConfig(PretrainedConfig):
    """A checkpoint's config.json for transformers.AutoConfig (registered when vlm is imported): the three sections
    VLM.save_pretrained writes, `vlm` (a VLMConfig), `vision` and `llm` (the towers' configs), as dicts."""

    model_type = MODEL_TYPE

    def __init__(self, vlm: dict | None = None, vision: dict | None = None, llm: dict | None = None, **kwargs):
        self.vlm, self.vision, self.llm = vlm or {}, vision or {}, llm or {}
        super().__init__(**kwargs)

    @property
    def vlm_config(self) -> VLMConfig:
        return VLMConfig.from_dict(self.vlm)


AutoConfig.register(MODEL_TYPE, VLMAutoConfig, exist_ok=True)
