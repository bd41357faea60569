"""The VLM: CLIP or SigLIP vision tower -> projector -> LLM tokens, SPHINX-V visual prompt tokens, LLM + LoRA.

Sequence layout (MiniGPT-v2 / SPHINX-V): bos, then the prompt with every <ImageHere> replaced by
the image's projected tokens and <PromptHere> by the visual prompt slots, then the answer + eos.
"""

import dataclasses
import json
import os
from collections import OrderedDict

import torch
from peft import PeftModel
from safetensors.torch import load_model, save_model
from torch import nn
from transformers import AutoModel, PreTrainedModel, PreTrainedTokenizerBase
from transformers.modeling_outputs import CausalLMOutputWithPast

from vlm.choice import AnswerTree, Choice, ChoiceLayout, layout
from vlm.collate import collate, pad_sequences
from vlm.config import MODEL_TYPE, VLMAutoConfig, VLMConfig, resolve_attn_implementation
from vlm.decoding import greedy_continue
from vlm.llm import add_lora, build_llm, llm_from_config
from vlm.projector import Projector
from vlm.prompt_encoder import VisualPromptEncoder
from vlm.tokenizer import IMAGE_TOKEN_ID, PROMPT_TOKEN_ID, build_tokenizer, encode, load_tokenizer
from vlm.vision import VisionEncoder, build_vision_tower, preprocess_images, vision_tower_from_config

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
ADAPTER_CONFIG_FILE = "adapter_config.json"  # peft's layout: LoRA apart from the base weights (vlm.export lora=adapter)
# Options transformers.AutoModel.from_pretrained passes on that a local VLM folder has no use for.
AUTO_MODEL_PLUMBING = ("revision", "trust_remote_code", "adapter_kwargs", "local_files_only")
LORA_PARAMETER_TAG = "lora_"  # peft names every adapter parameter lora_A / lora_B / ...
CHOICE_LAYOUTS_KEPT = 8  # choose() layouts cached, least recently used dropped first


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip padding on either side: [B, L] -> [B, L]."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class VLM(nn.Module):
    def __init__(
        self, config: VLMConfig, vision_tower: PreTrainedModel, llm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
    ):
        """Assemble from built towers; use from_config or from_pretrained instead."""
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.vision = VisionEncoder(vision_tower)
        llm_dim = llm.config.hidden_size
        self.projector = Projector(self.vision.hidden_size, llm_dim, config.merge)
        self.prompt_encoder = VisualPromptEncoder(
            llm_dim, config.num_prompt_slots, config.fourier_features, config.fourier_scale, config.seed
        )
        self.llm = add_lora(llm, config) if config.lora_r > 0 else llm
        if config.image_size % self.vision.patch_size:
            raise ValueError(
                f"image_size {config.image_size} is not a multiple of the patch size {self.vision.patch_size}"
            )
        grid = config.image_size // self.vision.patch_size
        self.num_image_tokens = self.projector.num_tokens(grid, grid)
        self.choice_layouts: OrderedDict[tuple, ChoiceLayout] = OrderedDict()

    # ---- construction, save, load -------------------------------------------------------------

    @classmethod
    def from_config(cls, config: VLMConfig, tokenizer: PreTrainedTokenizerBase | None = None) -> "VLM":
        """Tiny: towers from scratch, tokenizer = build_tokenizer() unless given.
        Full: towers and the LLM's tokenizer from the local directories in the config."""
        attn_implementation = resolve_attn_implementation(config.attn_implementation)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            vision_tower = build_vision_tower(config, attn_implementation)
            if tokenizer is None and config.llm_path is None:
                tokenizer = build_tokenizer(vocab_size=config.tokenizer_vocab_size)
            elif tokenizer is None:
                tokenizer = load_tokenizer(config.llm_path)
            llm = build_llm(config, tokenizer, attn_implementation)
            return cls(config, vision_tower, llm, tokenizer)

    def save_pretrained(self, path: str) -> None:
        """config.json (model_type, this config + both tower configs), model.safetensors, tokenizer files."""
        os.makedirs(path, exist_ok=True)
        meta = {
            "model_type": MODEL_TYPE,
            "vlm": self.config.to_dict(),
            "vision": self.vision.clip.config.to_dict(),
            "llm": self.llm.config.to_dict(),
        }
        with open(os.path.join(path, CONFIG_FILE), "w") as f:
            json.dump(meta, f, indent=2)
        save_model(self, os.path.join(path, WEIGHTS_FILE))
        self.tokenizer.save_pretrained(path)

    @classmethod
    def from_pretrained(cls, path: str, attn_implementation: str | None = None) -> "VLM":
        """Load a directory written by save_pretrained (the tower directories are not needed), in eval mode.
        A folder in peft's adapter layout (vlm.export lora=adapter) holds the base weights in model.safetensors
        and the LoRA weights in adapter_model.safetensors; peft loads those onto the LLM."""
        missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not os.path.isfile(os.path.join(path, name))]
        if missing:
            raise FileNotFoundError(
                f"{path!r} is not a VLM checkpoint: missing {', '.join(missing)}. Write one with "
                f"VLM.save_pretrained(dir), or start fresh with VLM.from_config(VLMConfig.preset('tiny'))."
            )
        with open(os.path.join(path, CONFIG_FILE)) as f:
            meta = json.load(f)
        config = VLMConfig.from_dict(meta["vlm"])
        attn_implementation = resolve_attn_implementation(attn_implementation or config.attn_implementation)
        vision_tower = vision_tower_from_config(
            meta["vision"], config.torch_dtype, attn_implementation, config.vision_stem
        )
        llm = llm_from_config(meta["llm"], config.torch_dtype, attn_implementation)
        adapter = os.path.isfile(os.path.join(path, ADAPTER_CONFIG_FILE))
        model = cls(
            dataclasses.replace(config, lora_r=0) if adapter else config, vision_tower, llm, load_tokenizer(path)
        )
        load_model(model, os.path.join(path, WEIGHTS_FILE))
        if adapter:
            model.llm = PeftModel.from_pretrained(model.llm, path)
            model.config = config
        return model.eval()

    def merge_lora(self) -> None:
        """Fold the LoRA weights into the LLM; afterwards config.lora_r is 0."""
        if self.config.lora_r == 0:
            raise ValueError("this model has no LoRA adapters to merge (lora_r=0)")
        self.llm = self.llm.merge_and_unload()
        self.config = dataclasses.replace(self.config, lora_r=0)

    # ---- training ------------------------------------------------------------------------------

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The parts set_trainable switches, by name."""
        llm_params = list(self.llm.named_parameters())
        return {
            "vision": list(self.vision.parameters()),
            "projector": list(self.projector.parameters()),
            "llm": [p for name, p in llm_params if LORA_PARAMETER_TAG not in name],
            "llm_lora": [p for name, p in llm_params if LORA_PARAMETER_TAG in name],
            "prompt_encoder": [
                *self.prompt_encoder.corner_type.parameters(),
                *self.prompt_encoder.validity.parameters(),
            ],
            "prompt_projector": [*self.prompt_encoder.proj.parameters(), *self.prompt_encoder.norm.parameters()],
        }

    def set_trainable(
        self,
        *,
        vision: bool = False,
        projector: bool = False,
        llm: bool = False,
        llm_lora: bool = False,
        prompt_encoder: bool = False,
        prompt_projector: bool = False,
    ) -> None:
        """Unfreeze exactly the named parts, freeze the rest (see config.TRAINING_STAGES)."""
        if llm_lora and self.config.lora_r == 0:
            raise ValueError("llm_lora=True but this model has no LoRA adapters (lora_r=0, e.g. after merge_lora())")
        flags = dict(
            vision=vision,
            projector=projector,
            llm=llm,
            llm_lora=llm_lora,
            prompt_encoder=prompt_encoder,
            prompt_projector=prompt_projector,
        )
        for group, params in self.parameter_groups().items():
            for p in params:
                p.requires_grad_(flags[group])

    def collate(self, samples: list[dict], padding_side: str = "right") -> dict[str, torch.Tensor]:
        return collate(samples, self.tokenizer, self.num_image_tokens, self.config.num_prompt_slots, padding_side)

    # ---- forward -------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.projector.proj.weight.device

    def preprocess(self, frames) -> torch.Tensor:
        """uint8 frames [..., H, W, 3] -> model input [..., 3, S, S] on the model's device."""
        return preprocess_images(frames, self.config.image_size, self.vision.mean, self.vision.std).to(self.device)

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, 3, S, S] -> projected image tokens [N, T, D]; cacheable per frame."""
        return self.projector(self.vision(pixel_values.to(self.device)))

    def embed(
        self,
        input_ids: torch.Tensor,
        images: torch.Tensor | None = None,
        image_tokens: torch.Tensor | None = None,
        prompt_coords: torch.Tensor | None = None,
        prompt_kinds: torch.Tensor | None = None,
        prompt_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids [B, L] with placeholders -> inputs_embeds [B, L, D].

        Image placeholders take, in order, the tokens of images [B, n_img, 3, S, S] or of
        precomputed image_tokens [B, n_img, T, D] (from encode_images).
        """
        embeds = self.llm.get_input_embeddings()(input_ids.clamp(min=0))  # [B, L, D]
        image_slots = input_ids == IMAGE_TOKEN_ID
        if image_slots.any():
            if image_tokens is None:
                if images is None:
                    raise ValueError("the prompts contain <ImageHere> but neither images nor image_tokens were given")
                image_tokens = self.encode_images(images.flatten(0, 1))  # [B*n_img, T, D]
            embeds = _fill(embeds, image_slots, image_tokens, "image")
        prompt_slots = input_ids == PROMPT_TOKEN_ID
        if prompt_slots.any():
            if prompt_coords is None or prompt_kinds is None or prompt_valid is None:
                raise ValueError("the prompts contain <PromptHere> but prompt_coords/kinds/valid were not given")
            rows = prompt_slots.any(-1).to(self.device)  # samples of other tasks may share the batch
            slots = self.prompt_encoder(
                prompt_coords.to(self.device)[rows],
                prompt_kinds.to(self.device)[rows],
                prompt_valid.to(self.device)[rows],
            )  # [B', S, D]
            embeds = _fill(embeds, prompt_slots, slots, "visual prompt")
        return embeds

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        images: torch.Tensor | None = None,
        image_tokens: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        prompt_coords: torch.Tensor | None = None,
        prompt_kinds: torch.Tensor | None = None,
        prompt_valid: torch.Tensor | None = None,
    ) -> CausalLMOutputWithPast:
        """A collated batch -> .logits [B, L, V], and .loss (mean over answer tokens) when labels are given."""
        input_ids = input_ids.to(self.device)
        attention_mask = attention_mask.to(self.device)
        embeds = self.embed(input_ids, images, image_tokens, prompt_coords, prompt_kinds, prompt_valid)
        return self.llm(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=positions(attention_mask),
            labels=None if labels is None else labels.to(self.device),
        )

    # ---- inference -----------------------------------------------------------------------------

    @torch.inference_mode()
    def choose(
        self,
        prompts: str | list[str],
        candidates: list[str],
        images: torch.Tensor | None = None,
        image_tokens: torch.Tensor | None = None,
        one_row_per_candidate: bool | None = None,
    ) -> Choice:
        """Pick the most likely candidate answer (e.g. the legal actions) for each prompt.

        images [B, n_img, 3, S, S], or image_tokens [B, n_img, T, D] precomputed per frame with
        encode_images (see FrameCache). A candidate's score is the summed log-prob of its tokens and
        eos; probabilities are the softmax of the scores over the candidates. One forward pass: each
        prompt is followed by the candidates' prefix tree (see AnswerTree), every tree node attending
        to the prompt and its own ancestors (a 4D mask). Flash attention takes no such mask, so there
        each (prompt, candidate) pair gets its own row (one_row_per_candidate: None = automatic).
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not candidates:
            raise ValueError("choose() needs at least one candidate answer")
        if image_tokens is None and images is not None:
            image_tokens = self.encode_images(images.flatten(0, 1)).unflatten(0, images.shape[:2])  # [B, n, T, D]
        if one_row_per_candidate is None:
            one_row_per_candidate = self.llm.config._attn_implementation == "flash_attention_2"
        plan = self.choice_layout(tuple(prompts), tuple(candidates), one_row_per_candidate)
        rows_per_prompt = len(plan.tree.rows)
        if image_tokens is not None:
            image_tokens = image_tokens.repeat_interleave(rows_per_prompt, dim=0)
        logits = self.llm(
            inputs_embeds=self.embed(plan.input_ids, image_tokens=image_tokens),
            attention_mask=plan.attention_mask,
            position_ids=plan.position_ids,
            logits_to_keep=plan.kept,
        ).logits
        logp = logits.float().log_softmax(-1).unflatten(0, (len(prompts), rows_per_prompt))  # [B, rows, K+1, V]
        term_row, term_kept, term_token, term_owner = plan.terms
        term_logp = logp[:, term_row, term_kept, term_token]  # [B, terms]
        scores = term_logp.new_zeros(len(prompts), len(candidates)).index_add(1, term_owner, term_logp)  # [B, C]
        probs = scores.softmax(-1)
        prob, index = probs.max(-1)
        greedy = logp.argmax(-1).tolist()  # [B][rows][K+1]
        greedy_legal = torch.tensor([plan.tree.greedy_is_legal(g) for g in greedy], device=self.device)
        return Choice([candidates[i] for i in index.tolist()], index, prob, probs, greedy_legal)

    def choice_layout(
        self, prompts: tuple[str, ...], candidates: tuple[str, ...], one_row_per_candidate: bool
    ) -> ChoiceLayout:
        """The image-independent part of choose(), cached: a game asks the same question every step."""
        key = (prompts, candidates, one_row_per_candidate, self.device, self.llm.dtype)
        if key not in self.choice_layouts:
            tree = AnswerTree(
                [self.tokenizer.encode(c, add_special_tokens=False) for c in candidates],
                self.tokenizer.eos_token_id,
                one_row_per_candidate,
            )
            prefixes = [
                encode(self.tokenizer, p, None, self.num_image_tokens, self.config.num_prompt_slots)[0] for p in prompts
            ]
            self.choice_layouts[key] = layout(prefixes, tree, self.tokenizer.pad_token_id, self.llm.dtype, self.device)
            while len(self.choice_layouts) > CHOICE_LAYOUTS_KEPT:
                self.choice_layouts.popitem(last=False)
        self.choice_layouts.move_to_end(key)
        return self.choice_layouts[key]

    @torch.inference_mode()
    def generate(
        self,
        prompts: str | list[str],
        images: torch.Tensor | None = None,
        image_tokens: torch.Tensor | None = None,
        max_new_tokens: int = 16,
        **visual_prompts,
    ) -> list[str]:
        """Greedy decoding until eos (or max_new_tokens); returns the answer texts."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        ids = [encode(self.tokenizer, p, None, self.num_image_tokens, self.config.num_prompt_slots)[0] for p in prompts]
        input_ids = pad_sequences(ids, self.tokenizer.pad_token_id, "left").to(self.device)  # [B, L]
        mask = pad_sequences([[1] * len(i) for i in ids], 0, "left").to(self.device)
        out = self.llm(
            inputs_embeds=self.embed(input_ids, images, image_tokens, **visual_prompts),
            attention_mask=mask,
            position_ids=positions(mask),
            use_cache=True,
            logits_to_keep=1,
        )
        logits, cache = out.logits[:, -1], out.past_key_values  # [B, V]
        return greedy_continue(self.llm, self.tokenizer, logits, cache, mask.sum(-1), max_new_tokens, mask)


def _fill(embeds: torch.Tensor, slots: torch.Tensor, values: torch.Tensor, what: str) -> torch.Tensor:
    """Write values [..., D] in order into the True positions of slots [B, L] of embeds [B, L, D]."""
    values = values.reshape(-1, embeds.shape[-1])
    expected = int(slots.sum())
    if values.shape[0] != expected:
        raise ValueError(
            f"the prompts hold {expected} {what} placeholders but {values.shape[0]} {what} tokens were given"
        )
    return embeds.masked_scatter(slots[..., None], values.to(embeds.dtype))


class VLMAutoModel(PreTrainedModel):
    """What transformers.AutoModel.from_pretrained(folder) gives once vlm is imported: the folder's VLM as
    VLM.from_pretrained loads it (`.vlm`, in eval mode), its config.json as a VLMAutoConfig (`.config`).
    AutoModel.from_config is not supported: a VLM's tokenizer lives in its folder, not in its config."""

    config_class = VLMAutoConfig
    base_model_prefix = "vlm"

    def __init__(self, config: VLMAutoConfig, vlm: VLM):
        super().__init__(config)
        self.vlm = vlm

    @classmethod
    def from_pretrained(
        cls, path: str, *, config: VLMAutoConfig | None = None, attn_implementation: str | None = None, **options
    ) -> "VLMAutoModel":
        unsupported = sorted(key for key, value in options.items() if key not in AUTO_MODEL_PLUMBING and value)
        if unsupported:
            raise TypeError(
                f"a VLM folder loads with attn_implementation only, not {', '.join(unsupported)}: "
                "move or cast the model afterwards (model.to(...))"
            )
        config = config or VLMAutoConfig.from_pretrained(path)
        # AutoModel hands attn_implementation to AutoConfig, which keeps it in the config.
        attn_implementation = attn_implementation or config._attn_implementation_internal
        return cls(config, VLM.from_pretrained(str(path), attn_implementation)).eval()

    def save_pretrained(self, path: str) -> None:
        """The VLM's own layout (VLM.save_pretrained), which both VLM.from_pretrained and AutoModel read."""
        self.vlm.save_pretrained(str(path))

    def forward(self, **batch) -> CausalLMOutputWithPast:
        return self.vlm(**batch)


AutoModel.register(VLMAutoConfig, VLMAutoModel, exist_ok=True)
