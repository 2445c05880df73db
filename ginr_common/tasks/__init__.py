"""Tasks: what differs between training objectives (see ``base.Task``). A new task is one new
module with a Task subclass (its model config and options declared), registered here by its
``name``."""
from ginr_common.tasks.base import Task, batch_indices, shard
from ginr_common.tasks.recon import ReconOptions, ReconstructionTask, evaluate_reconstruction, evaluate_sr
from ginr_common.tasks.sparse_flow import FlowOptions, SparseFlowTask, evaluate_sparse, evaluate_sparse_zero_shot
from ginr_common.tasks.sr import SuperResolutionTask

TASKS = {t.name: t for t in (ReconstructionTask, SuperResolutionTask, SparseFlowTask)}


def make_task(cfg):
    """The Task of a TrainConfig (``cfg.task``)."""
    if cfg.task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {cfg.task!r}")
    return TASKS[cfg.task](cfg)


__all__ = ["TASKS", "FlowOptions", "ReconOptions", "Task", "ReconstructionTask", "SuperResolutionTask", "SparseFlowTask", "batch_indices",
           "evaluate_reconstruction", "evaluate_sparse", "evaluate_sparse_zero_shot", "evaluate_sr", "make_task",
           "shard"]
