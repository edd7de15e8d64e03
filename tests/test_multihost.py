"""Two processes x 4 CPU devices on localhost (gloo collectives) behave like one process x 8 devices:
the same losses on `configs/distill.py:smoke` (~2 min: each process compiles six detectors), and on the
toy recipe a SIGTERM that reaches only one process stops both at the same step, with process 0 slow to
mark stages finished (the race that used to hang multi-process runs under load)."""

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from jaxface.train import writers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def start_processes(command, num_processes=2, devices_per_process=4, env=None):
    """Starts `command(coordinator_address, num_processes, process_id)` once per process."""
    port = free_port()
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices_per_process} "
                                      "--xla_backend_optimization_level=0", "JAX_PLATFORMS": "cpu", **(env or {})}
    return [subprocess.Popen(command(f"localhost:{port}", num_processes, i), cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for i in range(num_processes)]


def wait_all(procs, timeout):
    """Waits for every process; returns their exit codes (a hang fails the test instead of blocking CI)."""
    deadline = time.time() + timeout
    outputs = []
    for p in procs:
        try:
            outputs.append(p.communicate(timeout=max(1.0, deadline - time.time()))[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"multi-process run did not finish in {timeout} s (deadlock?)")
    return [p.returncode for p in procs], outputs


def run_processes(command, num_processes=2, devices_per_process=4, timeout=600, env=None):
    codes, outputs = wait_all(start_processes(command, num_processes, devices_per_process, env), timeout)
    for code, out in zip(codes, outputs):
        assert code == 0, out[-3000:]


def assert_same_losses(one_dir, two_dir, rtol):
    one, two = writers.read_metrics(str(one_dir)), writers.read_metrics(str(two_dir))
    assert set(one) == set(two)
    for stage in one:
        steps = sorted(one[stage])
        assert sorted(two[stage]) == steps
        # gloo sums in another order than the in-process all-reduce: equal up to float rounding
        np.testing.assert_allclose([two[stage][s]["loss"] for s in steps], [one[stage][s]["loss"] for s in steps],
                                   rtol=rtol, err_msg=stage)


def toy(workdir, steps):
    return lambda *dist: [sys.executable, "-m", "tests.toy_worker", str(workdir), str(steps), *map(str, dist)]


TOY_STEPS = 24


@pytest.fixture(scope="module")
def toy_reference(tmp_path_factory):
    """The toy recipe on one process with 8 devices."""
    workdir = tmp_path_factory.mktemp("one_process")
    run_processes(toy(workdir, TOY_STEPS), num_processes=1, devices_per_process=8, timeout=300)
    return workdir


def test_sigterm_to_one_process_stops_every_process_at_the_same_step(toy_reference, tmp_path):
    """Schedulers may signal hosts at different moments: all processes must still checkpoint the same
    step and exit, or the one that keeps training waits forever in its next collective."""
    slow_done = {"TOY_DONE_MARKER_DELAY": "2"}  # process 1 must wait for process 0's DONE markers
    procs = start_processes(toy(tmp_path, TOY_STEPS), env=slow_done)
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and all(p.poll() is None for p in procs):
        if metrics.exists() and sum(1 for _ in open(metrics)) >= 6:
            break
        time.sleep(0.02)
    procs[1].send_signal(signal.SIGTERM)  # only the second process is told
    codes, outputs = wait_all(procs, timeout=240)
    assert codes == [143, 143], [out[-2000:] for out in outputs]
    assert "SIGTERM received" in outputs[1] and "SIGTERM received" not in outputs[0]
    stopped_at = [out.split("interrupted (SIGTERM) ")[1].split(";")[0] for out in outputs]
    assert stopped_at[0] == stopped_at[1], stopped_at  # e.g. 'in stage joint at step 8: checkpoint written'
    logged = writers.read_metrics(str(tmp_path))
    assert sum(len(steps) for steps in logged.values()) < 2 * TOY_STEPS  # it stopped before the end

    run_processes(toy(tmp_path, TOY_STEPS), timeout=300, env=slow_done)  # resumes from that checkpoint
    assert_same_losses(toy_reference, tmp_path, rtol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "final_kernel.npy"), np.load(toy_reference / "final_kernel.npy"),
                               rtol=1e-5)


def test_two_processes_match_one_process_on_distill_smoke(distill_smoke_run, gestures_data_dir, tmp_path):
    reference_dir, _ = distill_smoke_run
    workdir = tmp_path / "two_hosts"
    run_processes(lambda address, n, i: [
        sys.executable, "-m", "experiments.run", "--config=configs/distill.py:smoke", f"--workdir={workdir}",
        f"--config.data.data_dir={gestures_data_dir}", f"--coordinator_address={address}",
        f"--num_processes={n}", f"--process_id={i}"], timeout=1200)
    # Adam with lr 1e-2 amplifies the rounding differences a little over the steps
    assert_same_losses(reference_dir, workdir, rtol=5e-3)
    assert (workdir / "results.json").exists()  # written by process 0 only


def test_when_a_run_joins_a_cluster_by_itself():
    from jaxface.train import devices

    assert devices.wants_auto_distributed("1", on_tpu_vm=False)  # SLURM, Open MPI: asked for
    assert devices.wants_auto_distributed(None, on_tpu_vm=True)  # Cloud TPU VM: without being asked
    assert not devices.wants_auto_distributed("0", on_tpu_vm=True)
    assert not devices.wants_auto_distributed(None, on_tpu_vm=False)  # a laptop, a single GPU box
    with pytest.raises(ValueError, match=r"JAXFACE_DISTRIBUTED='yes'; allowed: 1 .*, 0 .*, or unset"):
        devices.wants_auto_distributed("yes", on_tpu_vm=False)
