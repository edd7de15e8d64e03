"""Two processes x 4 CPU devices on localhost (gloo collectives) reproduce one process x 8 devices."""

import os
import socket
import subprocess
import sys

import numpy as np

from jaxface.train import writers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_processes(args, num_processes=2, devices_per_process=4, timeout=600):
    port = free_port()
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices_per_process} "
                                      "--xla_backend_optimization_level=0", "JAX_PLATFORMS": "cpu"}
    procs = [subprocess.Popen([sys.executable, "-m", "experiments.run", *args, f"--coordinator_address=localhost:{port}",
                               f"--num_processes={num_processes}", f"--process_id={i}"],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(num_processes)]
    outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    return outputs


def test_two_processes_match_one_process_on_distill_smoke(distill_smoke_run, gestures_data_dir, tmp_path):
    reference_dir, reference = distill_smoke_run
    workdir = tmp_path / "two_hosts"
    run_processes(["--config=configs/distill.py:smoke", f"--workdir={workdir}",
                   f"--config.data.data_dir={gestures_data_dir}"])
    one, two = writers.read_metrics(str(reference_dir)), writers.read_metrics(str(workdir))
    assert set(one) == set(two)
    for stage in one:
        steps = sorted(one[stage])
        assert sorted(two[stage]) == steps
        np.testing.assert_allclose([two[stage][s]["loss"] for s in steps], [one[stage][s]["loss"] for s in steps],
                                   rtol=1e-4, err_msg=stage)
    # only process 0 wrote results
    assert (workdir / "results.json").exists()
