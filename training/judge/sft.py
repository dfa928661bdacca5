"""The TRL SFTTrainer the judge recipe trains with: its arguments from the config, the completion-only
loss, early stopping, and the data-parallel settings (training/parallel.py)."""

from __future__ import annotations

from pathlib import Path

from training.judge.config import TrainConfig
from training.judge.models import Backend, checkpointing, checkpointing_kwargs
from training.parallel import BatchPlan, Parallel
from training.runs import shared_training_args


def _precision(cfg: TrainConfig, backend: Backend) -> dict:
    if backend.name == "unsloth":
        import torch

        bf16 = torch.cuda.is_bf16_supported()
        return {"bf16": bf16, "fp16": not bf16}
    return {"bf16": backend.dtype == "bfloat16", "fp16": backend.dtype == "float16"}


def _ddp_args(parallel: Parallel) -> dict:
    """DDP settings for a LoRA model: every trainable weight gets a gradient each step, so DDP need
    not search the graph for unused ones (transformers would, since a PeftModel is not a
    PreTrainedModel), and checkpointing must be non-reentrant (models.checkpointing_kwargs)."""
    if not parallel.distributed:
        return {}
    return {"ddp_find_unused_parameters": False, "gradient_checkpointing_kwargs": checkpointing_kwargs(parallel)}


def sft_config(cfg: TrainConfig, backend: Backend, out: Path, overrides: dict | None = None,
               batch: BatchPlan | None = None, parallel: Parallel = Parallel()):
    from trl import SFTConfig

    t = cfg.train
    batch = batch or BatchPlan(t.batch_size, t.grad_accum)
    values = dict(
        **shared_training_args(t, out, backend.device),
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=batch.grad_accum,
        max_grad_norm=t.max_grad_norm,
        optim=t.optim,
        eval_strategy="steps",
        eval_steps=t.eval_steps,
        save_strategy="steps",
        save_steps=t.eval_steps,  # a checkpoint per evaluation, so the best one can be restored
        save_total_limit=cfg.output.save_total_limit,
        save_only_model=True,
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        padding_free=t.padding_free,
        max_length=None,  # examples over model.max_seq_length were dropped when tokenized
        completion_only_loss=True,
        gradient_checkpointing=backend.name != "unsloth" and checkpointing(cfg, backend),
        **_precision(cfg, backend),
        **_ddp_args(parallel),
    )
    values.update(overrides or {})
    return SFTConfig(**values)


def completion_loss(model, inputs: dict, num_items_in_batch=None, accepts_loss_kwargs: bool = True):
    """Causal-LM loss on the completion tokens, projecting only their positions through the LM head.

    The same value as the model's own loss (summed over labelled tokens, divided by
    `num_items_in_batch` when given, else by their count), but the (tokens x vocabulary) logits of
    the prompt, ~90% of each example, are never computed: about a fifth less work per CPU step
    for SmolLM2, whose 49,152-word head is a fifth of the model."""
    import torch.nn.functional as F

    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    labels = inputs["labels"]
    features = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "position_ids")}
    hidden = causal_lm.get_decoder()(**features).last_hidden_state[:, :-1]
    targets = labels[:, 1:]
    keep = targets != -100
    logits = causal_lm.get_output_embeddings()(hidden[keep]).float()
    total = F.cross_entropy(logits, targets[keep], reduction="sum")
    if num_items_in_batch is not None and accepts_loss_kwargs:
        return total / num_items_in_batch
    return total / keep.sum().clamp(min=1)


def sft_trainer_class():
    """TRL's SFTTrainer, or, where its Triton loss kernel cannot load (torch CPU builds ship no
    Triton, and TRL 1.15 then fails in compute_loss), a subclass computing the same
    completion-only loss with `completion_loss`."""
    from trl import SFTTrainer
    from trl.trainer import utils as trl_utils

    if getattr(trl_utils, "_ChunkedLogProbFunction", True) is not None:
        return SFTTrainer

    class CompletionLossSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if _is_ddp(model):  # DDP syncs gradients only through its own forward: the model's own loss
                from transformers import Trainer

                return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)
            loss = completion_loss(model, inputs, num_items_in_batch, self.model_accepts_loss_kwargs)
            return (loss, {"loss": loss}) if return_outputs else loss

    return CompletionLossSFTTrainer


def _is_ddp(model) -> bool:
    from torch.nn.parallel import DistributedDataParallel

    return isinstance(model, DistributedDataParallel)


def setup_trainer(cfg, backend, model, tokenizer, train_ds, eval_ds, out, callbacks, sft_overrides=None,
                   batch: BatchPlan | None = None, parallel: Parallel = Parallel()):
    from transformers import EarlyStoppingCallback

    args = sft_config(cfg, backend, out, sft_overrides, batch, parallel)
    if cfg.train.early_stopping_patience > 0 and args.load_best_model_at_end:
        callbacks = [*callbacks, EarlyStoppingCallback(
            early_stopping_patience=cfg.train.early_stopping_patience,
            early_stopping_threshold=cfg.train.early_stopping_threshold,
        )]
    return sft_trainer_class()(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )
