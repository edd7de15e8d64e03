"""The benchmarks still run against the current code (opt-in: they compile full training steps)."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = ("distill", "multitask", "mutual", "semi_distill", "sr_recognition")


@pytest.mark.skipif(os.environ.get("JAXFACE_SLOW_TESTS") != "1", reason="~3 min on 2 cores; JAXFACE_SLOW_TESTS=1")
@pytest.mark.parametrize("recipe", RECIPES)
def test_train_step_benchmark_runs_on_the_smoke_config(recipe, request, tmp_path):
    """The main method's step of each recipe: the bare step's losses match the core's, and all lines print.
    The face and cell recipes prepare their smoke data on first use, each in a folder of its own (no race
    between pytest-xdist workers)."""
    data_dir = request.getfixturevalue("gestures_data_dir") if recipe in ("distill", "semi_distill") else tmp_path
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one device, as the benchmark is meant
    proc = subprocess.run([sys.executable, "-m", "experiments.bench", f"--config=configs/{recipe}.py:smoke",
                           "--steps=1", "--repeats=1", "--pipeline_steps=5",
                           f"--config.data.data_dir={data_dir}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the bare step logged the core's losses from the same variables and batch: it computes the same thing
    assert "loss at steps 1-3: core" in proc.stdout and "same computation" in proc.stdout, proc.stdout[-2000:]
    assert "ratio core/bare (img/s):" in proc.stdout, proc.stdout[-2000:]
    assert "input pipeline" in proc.stdout and "what the core's step consumes" in proc.stdout, proc.stdout[-2000:]
