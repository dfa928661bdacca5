"""Data-parallel training: which process this is, who writes, where its model lives, how big a step is.

`agent-helper train` runs unchanged under a launcher that starts one process per GPU:

    torchrun --standalone --nproc_per_node 2 -m ui.cli train --config training/configs/llama3-8b-qlora.toml
    accelerate launch --num_processes 2 -m ui.cli train --config …

Each process holds a full copy of the (4-bit) base and the LoRA on its own GPU; the HF Trainer
(through accelerate) wraps the model in DistributedDataParallel, gives each process its share of
every batch and averages the gradients, so the optimizer steps stay in lockstep. The launch state is
read through accelerate's `PartialState`, the object the Trainer itself uses, so this module and the
Trainer can never disagree about the ranks. Only rank 0 writes (run folder, adapter, metadata,
metrics, plots, tracking); the other ranks train and leave.
"""

from __future__ import annotations

from dataclasses import dataclass

from training.config import ConfigError


@dataclass(frozen=True)
class Parallel:
    """One process of a (possibly one-process) data-parallel launch."""

    world_size: int = 1
    """Processes in the launch, one per GPU (1 = a plain `python`/`agent-helper` run)."""
    rank: int = 0
    """This process's index among all of them; rank 0 is the one that writes."""
    local_rank: int = 0
    """This process's index on its machine: the GPU it owns."""

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def writes(self) -> bool:
        """Only one process writes the run folder, adapter, metadata, plots and tracking."""
        return self.rank == 0

    def device(self, kind: str) -> str:
        """The torch device of this process's model: its own GPU, or the CPU."""
        return f"cuda:{self.local_rank}" if kind.startswith("cuda") else "cpu"

    def device_map(self, kind: str) -> dict:
        """transformers' device_map for a 4-bit base: the whole model on this process's GPU (a
        bitsandbytes model cannot be moved after loading, and DDP wants one device per process)."""
        return {"": self.local_rank if kind.startswith("cuda") else "cpu"}

    def describe(self) -> str:
        return f"data-parallel over {self.world_size} processes" if self.distributed else "one process"


@dataclass(frozen=True)
class BatchPlan:
    """How one optimizer step's examples are split: per device, accumulated, over all devices."""

    per_device: int
    grad_accum: int
    world_size: int = 1

    @property
    def global_batch(self) -> int:
        """Examples per optimizer step over all processes."""
        return self.per_device * self.grad_accum * self.world_size

    def describe(self) -> str:
        return (f"{self.global_batch} examples per step = {self.per_device} per device x "
                f"{self.grad_accum} accumulated x {self.world_size} device{'s' if self.world_size > 1 else ''}")


def plan_batch(batch_size: int, grad_accum: int, global_batch: int, world_size: int) -> BatchPlan:
    """`global_batch` 0: the config's per-device batch and accumulation, so N GPUs take N times the
    examples per step (the usual data-parallel scaling; the step count per epoch drops N-fold).
    `global_batch` > 0: the accumulation is derived so that a step sees exactly that many examples
    on any number of GPUs (a recipe tuned on one GPU keeps its optimisation); it must divide."""
    if global_batch <= 0:
        return BatchPlan(batch_size, grad_accum, world_size)
    per_step = batch_size * world_size
    if global_batch % per_step:
        raise ConfigError(f"train.global_batch = {global_batch} is not a multiple of train.batch_size x GPUs "
                          f"= {batch_size} x {world_size}; change one of them (or set train.global_batch = 0)")
    return BatchPlan(batch_size, global_batch // per_step, world_size)


def check_visible_gpus(parallel: Parallel, visible: int) -> None:
    """One process per GPU. A single process that sees several would get nn.DataParallel from the
    Trainer, which TRL refuses only after the model has loaded; say what to do before that."""
    if visible > 1 and not parallel.distributed:
        raise ConfigError(f"{visible} GPUs are visible to this one process: train on all of them with one process "
                          f"each (torchrun --standalone --nproc_per_node {visible} -m ui.cli train --config …), "
                          "or on one (CUDA_VISIBLE_DEVICES=0 agent-helper train …)")


def current(cuda: bool) -> Parallel:
    """This process's place in the launch (a plain run is world size 1). Starts the process group
    under torchrun/accelerate (NCCL on GPUs, gloo on CPUs) and binds this process to its GPU."""
    from accelerate import PartialState

    state = PartialState(cpu=not cuda)
    return Parallel(state.num_processes, state.process_index, state.local_process_index)


def share(value, parallel: Parallel):
    """Rank 0's `value` on every rank (e.g. the run folder a timestamp names)."""
    if not parallel.distributed:
        return value
    from torch import distributed

    box = [value]
    distributed.broadcast_object_list(box, src=0)
    return box[0]


def wait_for_everyone(parallel: Parallel) -> None:
    if parallel.distributed:
        from accelerate import PartialState

        PartialState().wait_for_everyone()


def finish(parallel: Parallel) -> None:
    """Tear the process group down (each rank, once it needs no more collectives)."""
    if parallel.distributed:
        from torch import distributed

        if distributed.is_initialized():
            distributed.destroy_process_group()
