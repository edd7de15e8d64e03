"""Two processes x 4 CPU devices on localhost (gloo collectives) reproduce one process x 8 devices.

Opt-in (JAXFACE_SLOW_TESTS=1): the distill check takes minutes on 2 cores, and on a loaded 2-core
machine the toy check once hung in orbax's multi-process shutdown barrier (process 0 never reached it
within the coordinator's timeout; not yet diagnosed), so neither gates CI until that is understood.
"""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from jaxface.train import writers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_processes(command, num_processes=2, devices_per_process=4, timeout=900):
    """Starts `command + [coordinator, num_processes, process_id]`-style processes and waits for all."""
    port = free_port()
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices_per_process} "
                                      "--xla_backend_optimization_level=0", "JAX_PLATFORMS": "cpu"}
    procs = [subprocess.Popen(command(f"localhost:{port}", num_processes, i), cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(num_processes)]
    outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]


def assert_same_losses(one_dir, two_dir, rtol):
    one, two = writers.read_metrics(str(one_dir)), writers.read_metrics(str(two_dir))
    assert set(one) == set(two)
    for stage in one:
        steps = sorted(one[stage])
        assert sorted(two[stage]) == steps
        # gloo sums in another order than the in-process all-reduce: equal up to float rounding
        np.testing.assert_allclose([two[stage][s]["loss"] for s in steps], [one[stage][s]["loss"] for s in steps],
                                   rtol=rtol, err_msg=stage)


SLOW = pytest.mark.skipif(os.environ.get("JAXFACE_SLOW_TESTS") != "1", reason="multi-process; JAXFACE_SLOW_TESTS=1")


@SLOW
def test_two_processes_match_one_process_on_the_toy_recipe(tmp_path):
    def toy(workdir, *dist):
        return [sys.executable, "-m", "tests.toy_worker", str(workdir), "12", *map(str, dist)]

    run_processes(lambda *dist: toy(tmp_path / "one"), num_processes=1, devices_per_process=8)
    run_processes(lambda *dist: toy(tmp_path / "two", *dist))
    assert_same_losses(tmp_path / "one", tmp_path / "two", rtol=1e-5)


@SLOW
def test_two_processes_match_one_process_on_distill_smoke(distill_smoke_run, gestures_data_dir, tmp_path):
    reference_dir, _ = distill_smoke_run
    workdir = tmp_path / "two_hosts"
    run_processes(lambda address, n, i: [
        sys.executable, "-m", "experiments.run", "--config=configs/distill.py:smoke", f"--workdir={workdir}",
        f"--config.data.data_dir={gestures_data_dir}", f"--coordinator_address={address}",
        f"--num_processes={n}", f"--process_id={i}"])
    # Adam with lr 1e-2 amplifies the rounding differences a little over the steps
    assert_same_losses(reference_dir, workdir, rtol=5e-3)
    assert (workdir / "results.json").exists()  # written by process 0 only
