"""Experiment tracking: MLflow (default), Neptune via neptune-scale (optional), or none.

- "mlflow": a local store under the app home (`<home>/mlruns/mlflow.db`, artifacts in
  `<home>/mlruns/artifacts`; MLflow 3 refuses plain `./mlruns` file stores). System metrics are on
  (CPU, memory, disk, network via psutil; GPU use and memory when nvidia-ml-py is installed). View
  with `mlflow ui --backend-store-uri sqlite:///<home>/mlruns/mlflow.db`.
- "neptune": `neptune-scale` (`pip install '.[neptune]'`), for teams running their own Neptune
  server. The hosted Neptune service shut down on 2026-03-05. transformers' own Neptune callback
  is never used: it is deprecated and crashes offline.
- "none": nothing is logged outside the run folder.

The trainer reports through one small `Tracker` interface (a TrainerCallback forwards log
events), so transformers' built-in reporting integrations stay off (`report_to="none"`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Mapping

from training.config import ConfigError, TrackingSection


class Tracker:
    """Does nothing: the "none" backend, and the interface the others implement."""

    name = "none"

    def start(self, run_name: str, params: Mapping[str, object]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def log_artifact(self, path: Path) -> None:
        pass

    def finish(self, status: str = "FINISHED") -> None:
        pass

    @property
    def url(self) -> str | None:
        return None


def flatten(tree: Mapping, prefix: str = "") -> dict[str, object]:
    """{"train": {"epochs": 2}} -> {"train.epochs": 2}; lists become strings."""
    flat: dict[str, object] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


def numeric(metrics: Mapping[str, object]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class MlflowTracker(Tracker):
    name = "mlflow"

    def __init__(self, cfg: TrackingSection, home: Path):
        import mlflow

        self.mlflow = mlflow
        store = Path(home) / "mlruns"
        store.mkdir(parents=True, exist_ok=True)
        self.uri = cfg.uri or f"sqlite:///{store.resolve()}/mlflow.db"
        self.artifacts = (store / "artifacts").resolve().as_uri()
        self.cfg = cfg
        self.run = None

    def _experiment_id(self, client) -> str:
        found = client.get_experiment_by_name(self.cfg.experiment)
        if found is not None:
            return found.experiment_id
        return client.create_experiment(self.cfg.experiment, artifact_location=self.artifacts)

    def start(self, run_name, params):
        mlflow = self.mlflow
        mlflow.set_tracking_uri(self.uri)
        if self.cfg.system_metrics:
            mlflow.set_system_metrics_sampling_interval(self.cfg.system_metrics_interval_s)
            mlflow.set_system_metrics_samples_before_logging(1)
        experiment = self._experiment_id(mlflow.tracking.MlflowClient(self.uri))
        self.run = mlflow.start_run(
            experiment_id=experiment, run_name=run_name, log_system_metrics=self.cfg.system_metrics
        )
        items = list(flatten(params).items())
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per call
            mlflow.log_params(dict(items[start : start + 100]))

    def log_metrics(self, metrics, step):
        values = numeric(metrics)
        if self.run is not None and values:
            self.mlflow.log_metrics(values, step=step)

    def log_artifact(self, path):
        if self.run is not None and Path(path).exists():
            self.mlflow.log_artifact(str(path))

    def finish(self, status="FINISHED"):
        if self.run is not None:
            self.mlflow.end_run(status=status)
            self.run = None

    @property
    def url(self):
        return self.uri


class NeptuneTracker(Tracker):
    """neptune-scale client; the hosted Neptune service closed on 2026-03-05 (self-hosted only)."""

    name = "neptune"

    def __init__(self, cfg: TrackingSection, home: Path):
        try:
            from neptune_scale import Run
        except ImportError:
            raise ConfigError("tracking.backend = 'neptune' needs neptune-scale "
                              "(pip install '.[neptune]'); or use 'mlflow' / 'none'") from None
        self.Run = Run
        self.cfg = cfg
        self.run = None

    def start(self, run_name, params):
        self.run = self.Run(project=self.cfg.neptune_project, run_id=run_name,
                            experiment_name=self.cfg.experiment)
        self.run.log_configs(flatten(params))

    def log_metrics(self, metrics, step):
        values = numeric(metrics)
        if self.run is not None and values:
            self.run.log_metrics(data=values, step=step)

    def log_artifact(self, path):
        pass  # neptune-scale logs values, not files: the run folder keeps them

    def finish(self, status="FINISHED"):
        if self.run is not None:
            self.run.close()
            self.run = None


def check_tracking(cfg: TrackingSection) -> None:
    """Fail before training when the chosen backend cannot work."""
    if cfg.backend == "neptune" and importlib.util.find_spec("neptune_scale") is None:
        raise ConfigError("tracking.backend = 'neptune' needs neptune-scale (pip install '.[neptune]'); "
                          "note the hosted Neptune service shut down on 2026-03-05")
    if cfg.backend == "mlflow" and importlib.util.find_spec("mlflow") is None:
        raise ConfigError("tracking.backend = 'mlflow' needs mlflow (pip install mlflow)")


def make_tracker(cfg: TrackingSection, home: Path) -> Tracker:
    check_tracking(cfg)
    if cfg.backend == "mlflow":
        return MlflowTracker(cfg, home)
    if cfg.backend == "neptune":
        return NeptuneTracker(cfg, home)
    return Tracker()


def tracker_callback(tracker: Tracker):
    """A transformers TrainerCallback forwarding each log event to `tracker`."""
    from transformers import TrainerCallback

    class _Forward(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                tracker.log_metrics(logs, step=state.global_step)

    return _Forward()
