"""python -m vlm.export checkpoint=DIR out=DIR lora=adapter|merged

A VLM checkpoint folder's LoRA weights, the way another tool wants them:

    adapter   peft's layout: adapter_config.json + adapter_model.safetensors (the LLM's LoRA, loadable with
              peft.PeftModel.from_pretrained onto the LLM), model.safetensors without them
    merged    folded into the LLM's weights (config lora_r 0): one model.safetensors, no peft needed

Both load with VLM.from_pretrained and transformers.AutoModel.from_pretrained. The folder's training record and
validation go along, and out/ gets its own card.
"""

import shutil
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from core.cli import command
from core.errors import UserError
from core.files import write_atomically
from core.schema import option
from vlm.card import CARD_FILE, CONFUSION_PNG, TRAINING_FILE, VALIDATION_FILE, stage_path, vlm_checkpoint, write_card
from vlm.checkpoint import checkpoint_out
from vlm.model import VLM

LORA_LAYOUTS = ("adapter", "merged")


def save_adapter_layout(model: VLM, folder: Path) -> None:
    """Write `model` with its LoRA in peft's adapter files; the model loses its LoRA modules doing so."""
    # save_embedding_layers=False: peft would otherwise look the base model up to see whether embeddings changed.
    model.llm.save_pretrained(str(folder), save_embedding_layers=False)
    model.llm = model.llm.unload()
    model.save_pretrained(str(folder))  # config.json keeps the LoRA settings the adapter files hold


def export(checkpoint: Path, out: Path, lora: str, shown: str) -> None:
    model = VLM.from_pretrained(str(checkpoint))
    if model.config.lora_r == 0:
        raise UserError(f"checkpoint={checkpoint} has no LoRA weights (lora_r=0): it is already one plain model")

    def write(tmp: Path) -> None:
        if lora == "adapter":
            save_adapter_layout(model, tmp)
        else:
            model.merge_lora()
            model.save_pretrained(str(tmp))
        for name in (TRAINING_FILE, VALIDATION_FILE, CONFUSION_PNG):
            if (record := stage_path(checkpoint, name)) is not None:
                shutil.copy(record, tmp / name)
        write_card(tmp, shown)

    write_atomically(out, write)


@dataclass
class ExportConfig:
    checkpoint: str | None = option(check=vlm_checkpoint)
    out: str | None = option(check=checkpoint_out)
    lora: str | None = option(choices=LORA_LAYOUTS)


@command("vlm_export", ExportConfig)
def main(cfg: DictConfig) -> None:
    if cfg.checkpoint is None or cfg.out is None or cfg.lora is None:
        raise UserError("give checkpoint=DIR (a VLM checkpoint), out=DIR and lora=adapter or lora=merged")
    checkpoint, out = Path(cfg.checkpoint).expanduser(), Path(cfg.out).expanduser()
    if out.resolve() == checkpoint.resolve():
        raise UserError(f"out={cfg.out} is the checkpoint itself: choose another folder for out=")
    export(checkpoint, out, cfg.lora, str(cfg.out))
    print(f"wrote {out} (LoRA {cfg.lora}; card {out / CARD_FILE})")


if __name__ == "__main__":
    main()
