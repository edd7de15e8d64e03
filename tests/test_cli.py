"""`python -m experiments.run` as a scheduler sees it: the documented exit codes, run as a subprocess.

  0 finished, 2 configuration error (one line on stderr, nothing written), 3 workdir in use,
  4 NaN/Inf, 128 + signal number after SIGTERM (143) or Ctrl-C (130) with a checkpoint written.
"""

import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 300  # seconds for any one subprocess; generous, as other jobs may share the 2 cores

# For the interrupted runs: a first stage long enough that a signal sent after its first step lands
# inside it (the stop takes effect ~2 steps later). (warmup_steps=0: every stage must be longer than
# the warmup, and the smoke warmup is 2 steps.)
SHORT_RUN = ["--config.optimizer.warmup_steps=0", "--config.train.steps.teacher_big=12",
             *[f"--config.train.steps.{s}=2" for s in
               ("teacher_hr", "student", "student_kd_big", "student_kd_hr", "student_kd_both")]]


def cli_args(workdir, data_dir, *overrides):
    return [sys.executable, "-m", "experiments.run", "--config=configs/distill.py:smoke", f"--workdir={workdir}",
            f"--config.data.data_dir={data_dir}", *overrides]


def run_cli(workdir, data_dir, *overrides):
    return subprocess.run(cli_args(workdir, data_dir, *overrides), cwd=REPO, capture_output=True, text=True,
                          timeout=TIMEOUT)


def error_lines(stderr: str) -> list[str]:
    return [l for l in stderr.splitlines() if l.startswith("error:")]


# --- 2: configuration error (overrides: tests/test_distill.py) -----------------------------------
@pytest.mark.parametrize("config, workdir_is_file, message", [
    ("configs/nothere.py", False, "error: --config=configs/nothere.py could not be loaded (no such file?); "
                                  "configs here: configs/distill.py, configs/multitask.py"),
    ("configs/distill.py:smoke", True, "is an existing file, not a directory"),
], ids=["missing_config_file", "workdir_is_a_file"])
def test_bad_command_line_exits_2_with_one_line(tmp_path, config, workdir_is_file, message):
    workdir = tmp_path / "run"
    if workdir_is_file:
        workdir.write_text("not a directory")
    proc = subprocess.run([sys.executable, "-m", "experiments.run", f"--config={config}", f"--workdir={workdir}"],
                          cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT)
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr[-3000:]
    assert workdir.is_file() if workdir_is_file else not workdir.exists()


# --- 3: workdir in use ---------------------------------------------------------------------------
def test_busy_workdir_exits_3_and_leaves_the_workdir_alone(tmp_path, gestures_data_dir):
    from jaxface.train import loop

    workdir = tmp_path / "run"
    # flock locks belong to an open file description: the lock this process holds refuses a subprocess
    # exactly as a first training run would.
    with loop.WorkdirLock(str(workdir)):
        proc = run_cli(workdir, gestures_data_dir)
        holder = (workdir / ".lock").read_text()
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert error_lines(proc.stderr) == [
        f"error: workdir {workdir} is in use by {holder}; wait for it to finish or choose another --workdir"], \
        proc.stderr[-3000:]
    assert holder.startswith(f"pid {os.getpid()} ")
    assert os.listdir(workdir) == [".lock"]  # no config.json, metrics or checkpoints from the refused run


# --- 4: NaN / Inf ----------------------------------------------------------------------------------
def test_nan_loss_exits_4_naming_stage_step_and_metric(tmp_path, gestures_data_dir):
    workdir = tmp_path / "run"
    # Adam moves every parameter by ~learning_rate per step: the loss overflows within 3 steps.
    proc = run_cli(workdir, gestures_data_dir, "--config.optimizer.learning_rate=1e30")
    assert proc.returncode == 4, proc.stderr[-3000:]
    errors = error_lines(proc.stderr)
    assert len(errors) == 1, proc.stderr[-3000:]
    match = re.fullmatch(r"error: stage teacher_big: metric '(\w+)' is (nan|inf|-inf) at step (\d+); "
                         r"the newest checkpoint before it is kept", errors[0])
    assert match, errors[0]
    metric, step = match.group(1), int(match.group(3))
    # the message points at the logged row that went bad, and the rows before it were finite
    rows = {r["step"]: r for r in map(json.loads, open(workdir / "metrics.jsonl")) if r["stage"] == "teacher_big"}
    assert not math.isfinite(rows[step][metric]), rows[step]
    assert all(math.isfinite(v) for s in range(1, step) for k, v in rows[s].items() if k not in ("stage", "step"))
    assert "results.json" not in os.listdir(workdir)


# --- 143 / 130: SIGTERM and Ctrl-C, then resume -------------------------------------------------
def metric_lines(workdir) -> int:
    try:
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            return f.read().count("\n")
    except FileNotFoundError:
        return 0


def run_and_signal(workdir, data_dir, signum, log_path):
    """Starts the short run, sends `signum` once it has logged a step more than metrics.jsonl held
    before, and returns (exit code, stderr)."""
    before = metric_lines(workdir)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cli_args(workdir, data_dir, *SHORT_RUN), cwd=REPO, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + TIMEOUT
            while metric_lines(workdir) <= before:
                assert proc.poll() is None, f"exited {proc.returncode} before training:\n{open(log_path).read()[-3000:]}"
                assert time.monotonic() < deadline, "no training step logged in time"
                time.sleep(0.05)
            proc.send_signal(signum)
            rc = proc.wait(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return rc, open(log_path).read()


INTERRUPTED = r"interrupted \({}\) in stage (\w+) at step (\d+): checkpoint written; rerun the same command to resume"
RESUMING = r"\[(\w+)\] resuming at step (\d+) of \d+"


@pytest.fixture(scope="module")
def sigterm_run(gestures_data_dir, tmp_path_factory):
    """The short run, sent SIGTERM after its first step: (workdir, exit code, log)."""
    workdir = tmp_path_factory.mktemp("cli_signals") / "run"
    rc, log = run_and_signal(workdir, gestures_data_dir, signal.SIGTERM, workdir.parent / "sigterm.log")
    return workdir, rc, log


def test_sigterm_exits_143_after_writing_a_checkpoint(sigterm_run):
    workdir, rc, log = sigterm_run
    assert rc == 128 + signal.SIGTERM == 143, log[-3000:]
    stopped = re.findall(INTERRUPTED.format("SIGTERM"), log)
    assert len(stopped) == 1, log[-3000:]
    stage, step = stopped[0]
    assert stage == "teacher_big" and int(step) > 0
    assert os.path.isdir(workdir / "checkpoints" / stage / step), os.listdir(workdir / "checkpoints" / stage)


def test_ctrl_c_exits_130_and_the_rerun_resumed_from_the_sigterm_checkpoint(sigterm_run, gestures_data_dir):
    workdir, _, term_log = sigterm_run
    term_stage, term_step = re.findall(INTERRUPTED.format("SIGTERM"), term_log)[0]

    # the same command again resumes where SIGTERM stopped it; Ctrl-C stops it again with a checkpoint
    rc, log = run_and_signal(workdir, gestures_data_dir, signal.SIGINT, workdir.parent / "sigint.log")
    assert rc == 128 + signal.SIGINT == 130, log[-3000:]
    assert re.findall(RESUMING, log) == [(term_stage, term_step)], log[-3000:]
    stopped = re.findall(INTERRUPTED.format("SIGINT"), log)
    assert len(stopped) == 1, log[-3000:]
    int_stage, int_step = stopped[0]
    assert int_stage == term_stage and int(int_step) > int(term_step)

    # every start of the stage, as the loop recorded it: fresh, then at each checkpoint a signal wrote
    from jaxface.train import writers

    assert [(r["stage"], r["from_step"]) for r in writers.read_starts(str(workdir))] == [
        (term_stage, 0), (term_stage, int(term_step))]


def test_a_damaged_prepared_data_set_is_one_line_naming_it(tmp_path, gestures_data_dir):
    import glob
    import shutil

    data_dir = tmp_path / "tfds"
    shutil.copytree(gestures_data_dir, data_dir)
    (shard,) = glob.glob(str(data_dir / "synthetic_gestures" / "smoke" / "*" / "*-train.array_record-*"))
    with open(shard, "r+b") as f:  # a copy cut short, as by a full disk or an interrupted transfer
        f.truncate(os.path.getsize(shard) // 2)
    proc = run_cli(tmp_path / "run", data_dir)
    errors = error_lines(proc.stderr)
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    directory = data_dir / "synthetic_gestures" / "smoke"
    assert errors[0].startswith(f"error: the prepared data set synthetic_gestures/smoke (split 'train') under "
                                f"{directory} is damaged (Corrupted Riegeli/records file"), errors[0]
    assert errors[0].endswith(f"delete {directory} and rerun: it is prepared again")
    assert os.listdir(tmp_path / "run") == [".lock"]  # found before the run wrote anything
