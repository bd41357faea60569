"""Vision tower: a transformers CLIP or SigLIP vision model (CLIP's CLS token dropped), position grid interpolated to
any input size."""

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, CLIPVisionConfig, CLIPVisionModel, PreTrainedModel, SiglipVisionModel

from vlm.config import VLMConfig, load_tower_config

# OpenAI CLIP's normalisation (what CLIPImageProcessor uses).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# SigLIP's (what SiglipImageProcessor uses): [0, 1] -> [-1, 1].
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
UINT8_MAX = 255.0


@dataclass(frozen=True)
class VisionTowerType:
    model_class: type[PreTrainedModel]
    class_tokens: int  # tokens before the patch tokens in last_hidden_state
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


# Keyed by the vision config's model_type.
VISION_TOWERS = {
    "clip_vision_model": VisionTowerType(CLIPVisionModel, class_tokens=1, mean=CLIP_MEAN, std=CLIP_STD),
    "siglip_vision_model": VisionTowerType(SiglipVisionModel, class_tokens=0, mean=SIGLIP_MEAN, std=SIGLIP_STD),
}
# What a vision_path folder may hold: a vision model, or a dual encoder (CLIPModel, SiglipModel) whose vision half
# is loaded.
VISION_FOLDER_TYPES = ("clip", "clip_vision_model", "siglip", "siglip_vision_model")


def preprocess_images(
    frames: np.ndarray | torch.Tensor, size: int, mean: tuple = CLIP_MEAN, std: tuple = CLIP_STD
) -> torch.Tensor:
    """uint8 frames [..., H, W, 3] -> normalised float32 [..., 3, size, size] (bilinear, antialiased)."""
    if isinstance(frames, np.ndarray) and not frames.flags.writeable:
        frames = frames.copy()  # a memory-mapped dataset frame: torch does not wrap read-only arrays
    frames = torch.as_tensor(frames)
    if frames.dtype != torch.uint8 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames shaped [..., H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
    lead, (height, width) = frames.shape[:-3], frames.shape[-3:-1]
    x = frames.reshape(-1, height, width, 3).permute(0, 3, 1, 2).float() / UINT8_MAX  # [N, 3, H, W]
    if (height, width) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor(mean).view(1, 3, 1, 1)
    std = torch.tensor(std).view(1, 3, 1, 1)
    return ((x - mean) / std).reshape(*lead, 3, size, size)


class ConvStem(nn.Conv2d):
    """Patchify by convolutions (Xiao et al. 2021, "Early Convolutions Help Transformers See Better"):
    3x3 stride-2 convolutions down to the patch grid, then this 1x1 convolution to the tower's width.
    [N, 3, H, W] -> [N, D, H/patch, W/patch]. A drop-in for CLIP's patch_embedding (one linear map per
    patch), with which the tiny tower trained from scratch never learned SpaceInvaders' 1-3-pixel
    sprites (README). It is itself the final Conv2d because CLIPVisionEmbeddings reads
    patch_embedding.weight.dtype."""

    def __init__(self, hidden_size: int, patch_size: int):
        super().__init__(hidden_size, hidden_size, kernel_size=1)
        halvings = int(math.log2(patch_size))
        if 2**halvings != patch_size:
            raise ValueError(f"vision_stem='conv' needs a power-of-two patch_size, got {patch_size}")
        widths = [3] + [hidden_size >> (halvings - 1 - i) for i in range(halvings)]  # 3, D/4, D/2, D for patch 8
        layers = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1), nn.GELU()]
        self.downsample = nn.Sequential(*layers)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return super().forward(self.downsample(pixel_values))


def build_vision_tower(config: VLMConfig, attn_implementation: str) -> PreTrainedModel:
    if config.vision_path is not None:
        if config.vision_stem != "patch":
            raise ValueError(
                f"vision_stem={config.vision_stem!r} would replace the pretrained tower's patch embedding; "
                "use 'patch' with vision_path"
            )
        folder_config = load_tower_config(config.vision_path, "vision_path", VISION_FOLDER_TYPES)
        vision_config = getattr(folder_config, "vision_config", folder_config)  # a dual encoder's vision half
        if vision_config.model_type == "siglip_vision_model":
            vision_config.vision_use_head = False  # the pooling head: the VLM reads patch tokens only
        return AutoModel.from_pretrained(
            config.vision_path,
            config=vision_config,
            local_files_only=True,
            dtype=config.torch_dtype,
            attn_implementation=attn_implementation,
        )
    vision_config = CLIPVisionConfig(
        hidden_size=config.vision_hidden_size,
        intermediate_size=config.vision_intermediate_size,
        num_hidden_layers=config.vision_layers,
        num_attention_heads=config.vision_heads,
        image_size=config.image_size,
        patch_size=config.patch_size,
    )
    return vision_tower_from_config(
        vision_config.to_dict(), config.torch_dtype, attn_implementation, config.vision_stem
    )


def vision_tower_from_config(
    vision_config: dict, dtype: torch.dtype, attn_implementation: str, stem: str
) -> PreTrainedModel:
    """A randomly initialised tower from a saved config dict (weights are loaded afterwards)."""
    model_class = VISION_TOWERS[vision_config["model_type"]].model_class
    hf_config = model_class.config_class.from_dict(vision_config)
    hf_config._attn_implementation = attn_implementation
    tower = model_class(hf_config)
    if stem == "conv":
        tower.embeddings.patch_embedding = ConvStem(hf_config.hidden_size, hf_config.patch_size)
    return tower.to(dtype)


class VisionEncoder(nn.Module):
    def __init__(self, tower: PreTrainedModel):
        super().__init__()
        self.clip = tower  # named clip whatever the type: the checkpoints' weight names start with vision.clip.
        tower_type = VISION_TOWERS[tower.config.model_type]
        self.class_tokens = tower_type.class_tokens
        self.mean, self.std = tower_type.mean, tower_type.std
        self.patch_size = tower.config.patch_size
        self.hidden_size = tower.config.hidden_size

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] -> patch features on their grid [N, H/patch, W/patch, Dv]."""
        n, _, height, width = pixel_values.shape
        out = self.clip(pixel_values=pixel_values.to(self.clip.dtype), interpolate_pos_encoding=True)
        patches = out.last_hidden_state[:, self.class_tokens :]  # [N, gh*gw, Dv]
        return patches.reshape(n, height // self.patch_size, width // self.patch_size, self.hidden_size)
