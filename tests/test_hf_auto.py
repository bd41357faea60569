"""transformers' Auto classes and peft open VLM checkpoints: AutoConfig/AutoModel after `import vlm`, the shipped
folders, and `python -m vlm.export` in peft's adapter layout and merged. Real tiny models, nothing downloaded."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
import transformers
from conftest import REPO_ROOT, run_command
from peft import PeftModel
from safetensors.torch import load_file
from test_train import MICRO

from vlm import VLM, VLMConfig, prompts
from vlm.checkpoint import ADAPTER_WEIGHTS_FILE
from vlm.config import VLMAutoConfig
from vlm.export import main as export_main
from vlm.llm import llm_from_config
from vlm.model import ADAPTER_CONFIG_FILE, LORA_PARAMETER_TAG, VLMAutoModel

SHIPPED_WITH_MODEL_TYPE = ("game_carracing", "pvp_tiny")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A micro VLM whose LoRA does something (it starts at zero), saved."""
    model = VLM.from_config(VLMConfig.preset("tiny", seed=1, **MICRO))
    with torch.no_grad():
        for parameter in model.parameter_groups()["llm_lora"]:
            parameter.normal_(0, 0.05)
    path = tmp_path_factory.mktemp("vlm") / "micro"
    model.save_pretrained(str(path))
    return path


def batch(model: VLM) -> dict:
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 96, 96, 3), dtype=np.uint8)
    pixels = model.preprocess(frames)
    samples = [
        {"images": pixels[i : i + 1], "prompt": prompts.reconstruct_prompt(5, 9), "answer": "[12,200,7]"}
        for i in range(len(frames))
    ]
    return model.collate(samples)


def logits(model, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def test_auto_classes_load_what_vlm_loads(checkpoint, tmp_path):
    reference = VLM.from_pretrained(str(checkpoint))
    config = transformers.AutoConfig.from_pretrained(checkpoint)
    assert isinstance(config, VLMAutoConfig) and config.vlm_config == reference.config
    model = transformers.AutoModel.from_pretrained(checkpoint)
    assert isinstance(model, VLMAutoModel) and isinstance(model.vlm, VLM) and not model.training
    inputs = batch(reference)
    assert torch.equal(logits(model, inputs), logits(reference, inputs))
    model.save_pretrained(tmp_path / "again")  # the VLM's own layout
    assert torch.equal(logits(VLM.from_pretrained(str(tmp_path / "again")), inputs), logits(reference, inputs))
    eager = transformers.AutoModel.from_pretrained(checkpoint, attn_implementation="eager")
    assert eager.vlm.llm.config._attn_implementation == "eager"
    with pytest.raises(TypeError, match="device_map"):
        transformers.AutoModel.from_pretrained(checkpoint, device_map="cpu")


@pytest.mark.parametrize("name", SHIPPED_WITH_MODEL_TYPE)
def test_shipped_checkpoints_open_with_auto_model(name):
    folder = REPO_ROOT / "checkpoints" / name
    reference = VLM.from_pretrained(str(folder))
    model = transformers.AutoModel.from_pretrained(folder)
    inputs = batch(reference)
    assert torch.equal(logits(model, inputs), logits(reference, inputs))


def test_a_config_json_without_model_type_still_loads(checkpoint, tmp_path):
    """Checkpoints saved before config.json carried model_type load with VLM.from_pretrained as before."""
    old = tmp_path / "old"
    old.mkdir()
    for file in checkpoint.iterdir():
        (old / file.name).write_bytes(file.read_bytes())
    meta = json.loads((old / "config.json").read_text())
    del meta["model_type"]
    (old / "config.json").write_text(json.dumps(meta))
    reference = VLM.from_pretrained(str(checkpoint))
    inputs = batch(reference)
    assert torch.equal(logits(VLM.from_pretrained(str(old)), inputs), logits(reference, inputs))


def export(checkpoint, out, lora: str) -> None:
    run_command(export_main, "vlm_export", f"checkpoint={checkpoint}", f"out={out}", f"lora={lora}")


def test_adapter_export_loads_with_peft_and_gives_the_same_outputs(checkpoint, tmp_path):
    out = tmp_path / "adapter"
    export(checkpoint, out, "adapter")
    assert (out / ADAPTER_CONFIG_FILE).is_file() and (out / ADAPTER_WEIGHTS_FILE).is_file()
    base_weights = load_file(str(out / "model.safetensors"))
    assert not [key for key in base_weights if LORA_PARAMETER_TAG in key]
    reference = VLM.from_pretrained(str(checkpoint))
    inputs = batch(reference)
    expected = logits(reference, inputs)
    loaded = VLM.from_pretrained(str(out))
    assert loaded.config == reference.config and torch.equal(logits(loaded, inputs), expected)
    assert torch.equal(logits(transformers.AutoModel.from_pretrained(out), inputs), expected)

    # peft alone: the LLM from config.json and the base weights, the adapter put on it by PeftModel.
    meta = json.loads((out / "config.json").read_text())
    llm = llm_from_config(meta["llm"], torch.float32, "sdpa")
    llm.load_state_dict(
        {key.removeprefix("llm."): value for key, value in base_weights.items() if key.startswith("llm.")}
    )
    llm = PeftModel.from_pretrained(llm, str(out)).eval()
    with torch.no_grad():
        embeds = reference.embed(inputs["input_ids"], inputs["images"])
        mask = inputs["attention_mask"]
        assert torch.equal(
            llm(inputs_embeds=embeds, attention_mask=mask).logits,
            reference.llm(inputs_embeds=embeds, attention_mask=mask).logits,
        )


def test_merged_export_gives_the_same_outputs(checkpoint, tmp_path):
    out = tmp_path / "merged"
    export(checkpoint, out, "merged")
    assert not (out / ADAPTER_CONFIG_FILE).exists()
    assert not [key for key in load_file(str(out / "model.safetensors")) if LORA_PARAMETER_TAG in key]
    merged = transformers.AutoModel.from_pretrained(out)
    assert merged.vlm.config.lora_r == 0
    reference = VLM.from_pretrained(str(checkpoint))
    inputs = batch(reference)
    assert torch.allclose(logits(merged, inputs), logits(reference, inputs), atol=1e-4)


def test_export_refuses_what_it_cannot_do(checkpoint, tmp_path, capsys):
    merged = tmp_path / "merged"
    export(checkpoint, merged, "merged")
    refused = [
        ((checkpoint, checkpoint, "merged"), "is the checkpoint itself"),
        ((merged, tmp_path / "again", "adapter"), "has no LoRA weights"),
        ((checkpoint, tmp_path / "other", "both"), "choose one of adapter, merged"),
    ]
    for args, message in refused:
        with pytest.raises(SystemExit) as exit_:
            export(*args)
        error = capsys.readouterr().err
        assert exit_.value.code == 2 and error.startswith("error:") and message in error
    assert not (tmp_path / "again").exists() and not (tmp_path / "other").exists()
