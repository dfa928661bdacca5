"""Tracking backends: MLflow into a local store under the app home, Neptune optional, none."""

from __future__ import annotations

import importlib.util
import time

import pytest

from training.config import ConfigError, TrackingSection
from training.tracking import Tracker, flatten, make_tracker, numeric


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_flatten_and_numeric():
    assert flatten({"train": {"epochs": 2, "modules": ["q", "k"]}, "name": "x"}) == {
        "train.epochs": 2, "train.modules": "['q', 'k']", "name": "x"}
    assert numeric({"loss": 1, "flag": True, "text": "a", "lr": 0.5}) == {"loss": 1.0, "lr": 0.5}


def test_none_backend_does_nothing(tmp_path):
    tracker = make_tracker(TrackingSection(backend="none"), tmp_path)
    assert type(tracker) is Tracker
    tracker.start("run", {"a": 1})
    tracker.log_metrics({"loss": 1.0}, step=1)
    tracker.finish()
    assert not (tmp_path / "mlruns").exists()


def test_mlflow_logs_params_metrics_system_metrics_and_artifacts(tmp_path):
    import mlflow

    tracker = make_tracker(TrackingSection(system_metrics=True, system_metrics_interval_s=0.5), tmp_path)
    tracker.start("unit", {"train": {"epochs": 2}})
    for step in range(3):
        tracker.log_metrics({"loss": 1.0 / (step + 1), "epoch": step}, step=step)
    (tmp_path / "note.txt").write_text("hi")
    tracker.log_artifact(tmp_path / "note.txt")
    time.sleep(1.5)  # let the system-metrics monitor sample once
    run_id = tracker.run.info.run_id
    tracker.finish()
    client = mlflow.tracking.MlflowClient(tracker.uri)
    run = client.get_run(run_id)
    assert run.data.params["train.epochs"] == "2"
    assert [m.value for m in client.get_metric_history(run_id, "loss")] == [1.0, 0.5, 1.0 / 3]
    assert any(key.startswith("system/cpu_utilization") for key in run.data.metrics)
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()
    assert [a.path for a in client.list_artifacts(run_id)] == ["note.txt"]


@pytest.mark.skipif(importlib.util.find_spec("neptune_scale") is not None, reason="neptune-scale installed")
def test_neptune_without_package_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="neptune-scale"):
        make_tracker(TrackingSection(backend="neptune", neptune_project="team/judge"), tmp_path)
