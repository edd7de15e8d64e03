"""The benchmarks still run against the current code (opt-in: they compile full training steps)."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(os.environ.get("JAXFACE_SLOW_TESTS") != "1", reason="~45 s on 2 cores; JAXFACE_SLOW_TESTS=1")
def test_train_step_benchmark_runs_on_the_smoke_config(gestures_data_dir):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one device, as the benchmark is meant
    proc = subprocess.run([sys.executable, "-m", "experiments.bench", "--config=configs/distill.py:smoke", "--steps=1",
                           "--repeats=1", "--pipeline_steps=5", f"--config.data.data_dir={gestures_data_dir}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ratio core/bare (img/s):" in proc.stdout, proc.stdout[-2000:]
    assert "input pipeline" in proc.stdout and "examples/s" in proc.stdout, proc.stdout[-2000:]
