"""Training tasks, one module each, found by name; a stage mixes its tasks by ratio, one task per batch
(MiniGPT-v2's scheme).

    pvp            train/tasks/pvp.py            pixel value prediction (PAE-LaMM)
    game           train/tasks/game.py           imitation of a collected expert (or any chosen policy) dataset
    segmentation   train/tasks/segmentation.py   referring segmentation on annotated frames (PAE-LaMM §3.3)
    visual_prompt  train/tasks/visual_prompt.py  labels of marked points and boxes (SPHINX-V)

A task owns its data (which sources it reads), its batches, its loss and its validation metric; see
train/README.md for how to add one. This package imports no gymnasium.
"""

from train.tasks.base import TASKS, NoData, StageTask, Task, TaskMixer, Validation, build_tasks, register_task

__all__ = ["TASKS", "NoData", "StageTask", "Task", "TaskMixer", "Validation", "build_tasks", "register_task"]
