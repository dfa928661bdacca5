"""A wheel install (`pip install .`, not editable) carries every package and the shipped models, and
the code finds the models inside site-packages, not in a checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CLEAN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing but the wheel on the path
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    source = tmp_path_factory.mktemp("source") / "agent-helper"  # the build writes build/ beside the sources
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".*", "build", "runs", "__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(source)], check=True, capture_output=True, text=True, env=CLEAN_ENV)
    (found,) = out.glob("agent_helper-*.whl")
    return found


def test_the_wheel_holds_every_package_and_the_shipped_models(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in ("ingest", "retriever", "reasoner", "app", "ui", "training", "training/judge",
                    "training/judge/data", "training/embedder", "training/reranker", "agent_helper_models"):
        assert f"{package}/__init__.py" in names, package
    for model in ("judge-smollm2/agent_helper.json", "judge-smollm2/adapter_model.safetensors",
                  "embedder-minilm/embedder.json", "embedder-minilm/adapter_model.safetensors"):
        assert f"agent_helper_models/{model}" in names, model
    assert "training/configs/smollm2-135m-lora.toml" in names


def test_an_installed_wheel_finds_the_shipped_models_in_site_packages(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True, text=True, env=CLEAN_ENV)
    # reasoner.backends and the models package import nothing beyond the standard library.
    script = ("from reasoner.backends import default_adapter_path, read_adapter_metadata;"
              "path = default_adapter_path(); print(path);"
              "print(read_adapter_metadata(path).get('prompt_format'))")
    run = subprocess.run([str(python), "-I", "-c", script], cwd=tmp_path, capture_output=True, text=True, env=CLEAN_ENV)
    assert run.returncode == 0, run.stderr
    path, prompt_format = run.stdout.split()
    assert "site-packages" in path and Path(path, "adapter_model.safetensors").is_file()
    assert not Path(path).is_relative_to(REPO) and prompt_format == "listwise"
