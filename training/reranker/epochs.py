"""Keeping the best epoch: after each epoch the validation lists are reranked by the model in
training; the adapter is saved when the reranker's own top-1 is the best so far. Training stops
early after `early_stopping_patience` evaluations without progress, or once `max_time_s` is spent
(a lease on a shared GPU is short: the best epoch so far is kept)."""

from __future__ import annotations

import time
from pathlib import Path

from training.reranker.evaluation import order_metrics
from training.runs import append_metrics


class EpochKeeper:
    def __init__(self, cfg, model, lists, knowledge, out: Path, started: float, tracker, log):
        self.cfg, self.model, self.lists, self.knowledge = cfg, model, lists, knowledge
        self.out, self.started, self.tracker, self.log = out, started, tracker, log
        self.best: float | None = None
        self.stale = 0
        self.history: list[dict] = []
        self.train_started = time.perf_counter()

    def evaluate(self, step: int, epoch: float) -> bool:
        """Score validation, save the adapter when it is the best; True when training should stop."""
        from training.reranker.trainer import score_lists

        self.model.model.eval()
        logits = score_lists(self.model.model, self.model.tokenizer, self.lists, self.knowledge, self.cfg)
        self.model.model.train()
        top1 = order_metrics(self.lists, logits)["top1"] or 0.0
        record = {"stage": "epoch", "step": step, "epoch": epoch, "validation_reranker_top1": top1,
                  "time_s": round(time.perf_counter() - self.started, 3)}
        self.history.append(record)
        append_metrics(self.out, record)
        self.tracker.log_metrics({"validation_reranker_top1": top1}, step=step)
        self.log(f"epoch {epoch:.2f} (step {step}): validation top-1 of the reranker alone {top1:.3f}")
        if self.best is None or top1 > self.best:
            self.best, self.stale = top1, 0
            self.save()
            record["kept"] = True
            return False
        self.stale += 1
        patience = self.cfg.train.early_stopping_patience
        return bool(patience) and self.stale >= patience

    def save(self) -> None:
        self.model.model.save_pretrained(str(self.out))  # adapter_config.json + adapter_model.safetensors

    def out_of_time(self) -> bool:
        limit = self.cfg.train.max_time_s
        return bool(limit) and time.perf_counter() - self.train_started > limit

    def ensure_saved(self) -> None:
        """A run stopped before its first evaluation still leaves its adapter, evaluated once."""
        if self.best is None:
            self.evaluate(-1, -1.0)

    def callback(self):
        from transformers import TrainerCallback

        keeper = self

        class _KeepBest(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if keeper.out_of_time():
                    keeper.log(f"train.max_time_s ({keeper.cfg.train.max_time_s:g} s) reached at step "
                               f"{state.global_step}: stopping")
                    control.should_training_stop = True
                return control

            def on_epoch_end(self, args, state, control, **kwargs):
                if keeper.evaluate(state.global_step, float(state.epoch or 0)):
                    keeper.log("no better validation top-1: stopping early")
                    control.should_training_stop = True
                return control

        return _KeepBest()
