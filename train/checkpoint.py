"""Stage folders (the layout is core.runs'): periodic checkpoints (model + trainer state), the final model, a summary.

    <stage>/checkpoint-<step>/   VLM.save_pretrained files + trainer_state.pt (optimizer, scheduler, step)
    <stage>/final/               the stage's trained model; its presence marks the stage as done
    <stage>/summary.json         steps, samples, wall time, throughput, last losses
    <stage>/tb/                  TensorBoard scalars

Every file and folder is written under a temporary name and renamed into place (core.files), so a kill at
any moment leaves the previous checkpoint intact; a resumed run loses at most the steps since it.

An FSDP-sharded model is saved in the same layout: its shards and its optimizer's are gathered on rank 0, which
writes them as one process would: a final model loads with VLM.from_pretrained in one process, and a checkpoint
holds what an unsharded run's holds.
"""

import contextlib
import copy
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import load_model
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict
from torch.distributed.tensor import DTensor, distribute_tensor

from core import files
from core.runs import SUMMARY_FILE, checkpoint_dir, checkpoint_step, final_dir
from vlm import VLM, card
from vlm.model import WEIGHTS_FILE

TRAINER_STATE_FILE = "trainer_state.pt"
# Whole tensors on rank 0's CPU, one at a time, and {} on the other ranks.
GATHER_ON_RANK0 = StateDictOptions(full_state_dict=True, cpu_offload=True)
STATE, PARAM_GROUPS, PARAMS = "state", "param_groups", "params"  # the keys of an optimizer's state_dict()


def is_done(stage_dir: Path) -> bool:
    return (final_dir(stage_dir) / WEIGHTS_FILE).is_file() and (stage_dir / SUMMARY_FILE).is_file()


def checkpoints(stage_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    if not stage_dir.is_dir():
        return []
    found = [
        (step, path)
        for path in stage_dir.iterdir()
        if (step := checkpoint_step(path)) is not None and (path / TRAINER_STATE_FILE).is_file()
    ]
    return sorted(found)


def clean_partial(stage_dir: Path) -> None:
    """Remove what a killed run was writing when it died."""
    files.clean_partial(stage_dir)


def save_checkpoint(stage_dir: Path, model: VLM, trainer_state: dict) -> Path:
    """Write checkpoint-<step>, then delete the older ones."""
    step = trainer_state["step"]
    target = checkpoint_dir(stage_dir, step)

    def write(tmp: Path) -> None:
        model.save_pretrained(str(tmp))
        torch.save(trainer_state, tmp / TRAINER_STATE_FILE)

    files.write_atomically(target, write)
    for old_step, path in checkpoints(stage_dir):
        if old_step != step:
            shutil.rmtree(path)
    return target


def load_checkpoint(path: Path, model: VLM) -> dict:
    """Load the checkpoint's weights into model; -> its trainer state."""
    load_model(model, str(path / WEIGHTS_FILE), device=str(model.device))
    return torch.load(path / TRAINER_STATE_FILE, map_location=model.device, weights_only=True)


def save_final(stage_dir: Path, model: VLM, summary: dict) -> None:
    def write(tmp: Path) -> None:
        model.save_pretrained(str(tmp))
        card.write_stage_card(tmp, summary, final_dir(stage_dir))

    files.write_atomically(final_dir(stage_dir), write)
    files.write_json_atomically(stage_dir / SUMMARY_FILE, summary)
    for _, path in checkpoints(stage_dir):
        shutil.rmtree(path)


def weightless_copy(model: VLM) -> VLM:
    """A copy of `model` (unsharded, not yet trained) whose parameters and buffers are on the meta device, sharing
    its config and tokenizer: what gathered_model fills and saves."""
    memo = {id(model.config): model.config, id(model.tokenizer): model.tokenizer}
    for parameter in model.parameters():
        memo[id(parameter)] = nn.Parameter(torch.empty_like(parameter, device="meta"), parameter.requires_grad)
    for buffer in model.buffers():
        memo[id(buffer)] = torch.empty_like(buffer, device="meta")
    return copy.deepcopy(model, memo)


@contextlib.contextmanager
def gathered_model(model: VLM, skeleton: VLM | None) -> Iterator[VLM | None]:
    """A collective of every rank: the sharded model's whole weights in `skeleton` (on rank 0's CPU), None on the
    other ranks. The skeleton gives the weights up again on exit."""
    weights = get_model_state_dict(model, options=GATHER_ON_RANK0)
    if skeleton is None:
        yield None
        return
    for name, tensor in weights.items():
        if tensor.untyped_storage().nbytes() > tensor.numel() * tensor.element_size():
            weights[name] = tensor.clone()  # a view of an unevenly sharded tensor's padding: safetensors refuses those
    skeleton.load_state_dict(weights, assign=True)
    try:
        yield skeleton
    finally:
        skeleton.to("meta")


def gathered_optimizer_state(model: VLM, optimizer: torch.optim.Optimizer) -> dict:
    """A collective of every rank: the state of the sharded model's optimizer gathered on rank 0 ({} elsewhere),
    in optimizer.state_dict()'s layout, which numbers the parameters in their order in the optimizer."""
    whole = get_optimizer_state_dict(model, optimizer, options=GATHER_ON_RANK0)
    if not whole:
        return {}
    names = [name for group in whole[PARAM_GROUPS] for name in group[PARAMS]]
    number = {name: index for index, name in enumerate(names)}
    return {
        STATE: {number[name]: value for name, value in whole[STATE].items()},
        PARAM_GROUPS: [{**group, PARAMS: [number[name] for name in group[PARAMS]]} for group in whole[PARAM_GROUPS]],
    }


def load_sharded_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """Load an optimizer.state_dict() of the whole model (saved under any strategy) into the optimizer of the
    sharded one: each rank keeps its own shard of every state tensor shaped like its parameter."""
    parameters = [parameter for group in optimizer.param_groups for parameter in group[PARAMS]]

    def shard_like(parameter: DTensor, value):
        if isinstance(value, torch.Tensor) and value.shape == parameter.shape and value.dim() > 0:
            # Every rank holds the whole tensor: each takes its own shard, nothing is sent.
            return distribute_tensor(
                value.to(parameter.device), parameter.device_mesh, parameter.placements, src_data_rank=None
            )
        return value

    state = {
        index: {key: shard_like(parameters[index], value) for key, value in values.items()}
        for index, values in saved[STATE].items()
    }
    optimizer.load_state_dict({**saved, STATE: state})


def read_summary(stage_dir: Path) -> dict:
    return json.loads((stage_dir / SUMMARY_FILE).read_text())
