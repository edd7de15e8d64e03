r"""Kill -9 a training run at random moments, restart it each time, and check that it still finishes
bit-identical to an uninterrupted run (every stage's final parameters and every logged loss), and that
every restart resumed from the newest checkpoint on disk rather than retraining (from `starts.jsonl`).

  python -m experiments.kill_resume --config=configs/distill.py:smoke --trials=20 --kills=3

Prints one line per trial, with the stage and step each restart resumed from, and the counts of
identical finishes and of restarts that resumed where they should (target: all of them).
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
from absl import app, flags, logging

from jaxface.train.checkpoints import StageCheckpoints, quiet_orbax
from jaxface.train.writers import read_metrics, read_starts

_CONFIG = flags.DEFINE_string("config", "configs/distill.py:smoke", "Config (path.py:variant) to run.")
_TRIALS = flags.DEFINE_integer("trials", 20, "Number of killed-and-resumed runs.")
_KILLS = flags.DEFINE_integer("kills", 3, "SIGKILLs per trial, at random times.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the kill times.")
_ROOT = flags.DEFINE_string("root", "", "Directory for the runs (default: a new temporary directory).")
_OVERRIDES = flags.DEFINE_multi_string("override", [], "Extra --config.* overrides, e.g. train.batch_size=8.")


def run_command(workdir: str) -> list[str]:
    return [sys.executable, "-m", "experiments.run", f"--config={_CONFIG.value}", f"--workdir={workdir}",
            *[f"--config.{o}" for o in _OVERRIDES.value]]


def finished_steps(workdir: str) -> int:
    return sum(len(steps) for steps in read_metrics(workdir).values())


def final_params(workdir: str) -> dict:
    out = {}
    for stage in sorted(os.listdir(os.path.join(workdir, "checkpoints"))):
        ckpt = StageCheckpoints(os.path.join(workdir, "checkpoints", stage), save_every_steps=1, keep=1)
        out[stage] = ckpt.restore_variables(None)
        ckpt.close()
    return out


def newest_checkpoints(workdir: str) -> dict[str, int]:
    """{stage: newest complete checkpoint step on disk} (orbax renames a checkpoint into place when complete)."""
    root = os.path.join(workdir, "checkpoints")
    stages = os.listdir(root) if os.path.isdir(root) else []
    return {s: max([int(d) for d in os.listdir(os.path.join(root, s)) if d.isdigit()], default=0) for s in stages}


def restart(workdir: str, until_steps: int | None) -> tuple[list[str], bool, bool]:
    """Runs the command on `workdir`, SIGKILLed once `until_steps` steps are logged (None: to the end).
    Returns (['stage@step' it started each stage from], whether each start was the newest checkpoint
    on disk before the restart, whether it was killed)."""
    expected, known = newest_checkpoints(workdir), len(read_starts(workdir))
    if until_steps is None:
        subprocess.run(run_command(workdir), check=True, capture_output=True)
        killed = False
    else:
        proc = subprocess.Popen(run_command(workdir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and finished_steps(workdir) < until_steps:
            time.sleep(0.05)
        killed = proc.poll() is None
        if killed:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    records = read_starts(workdir)[known:]
    where = [f"{r['stage']}@{r['from_step']}" for r in records]
    return where, all(r["from_step"] == expected.get(r["stage"], 0) for r in records), killed


def identical(a: dict, b: dict) -> bool:
    la, lb = jax.tree.leaves_with_path(a), jax.tree.leaves_with_path(b)
    return len(la) == len(lb) and all(pa == pb and np.array_equal(np.asarray(x), np.asarray(y))
                                      for (pa, x), (pb, y) in zip(la, lb))


def main(argv):
    logging.set_verbosity(logging.WARNING)
    quiet_orbax()
    root = _ROOT.value or tempfile.mkdtemp(prefix="kill_resume_")
    # The reference run fills a compilation cache of this script's own, so each restart skips compiling.
    os.environ["JAXFACE_COMPILATION_CACHE"] = os.path.join(root, "xla_cache")
    reference = os.path.join(root, "reference")
    t0 = time.time()
    subprocess.run(run_command(reference), check=True, capture_output=True)
    total_steps = finished_steps(reference)
    ref_params, ref_losses = final_params(reference), read_metrics(reference)
    print(f"reference run: {total_steps} logged steps in {time.time() - t0:.0f} s ({root})", flush=True)

    rng = np.random.default_rng(_SEED.value)
    same = restarts = resumed_right = 0
    for trial in range(_TRIALS.value):
        workdir = os.path.join(root, f"trial{trial}")
        kills, report = 0, []
        targets = sorted(rng.integers(1, total_steps, size=_KILLS.value))
        for n, target in enumerate([*targets, None]):
            where, right, killed = restart(workdir, target)
            kills += killed
            if n:  # the first run starts fresh; every later one is a restart
                restarts += 1
                resumed_right += right
                report.append(f"restart {n}: {' '.join(where) or '-'}{'' if right else ' (NOT the newest checkpoint)'}")
        ok = identical(final_params(workdir), ref_params) and read_metrics(workdir) == ref_losses
        same += ok
        print(f"trial {trial}: {kills} kills, {'identical' if ok else 'DIFFERENT'}; {'; '.join(report)} "
              f"({time.time() - t0:.0f} s so far)", flush=True)
    print(json.dumps({"config": _CONFIG.value, "trials": _TRIALS.value, "kills_per_trial": _KILLS.value,
                      "identical_finishes": same, "restarts": restarts,
                      "restarts_from_newest_checkpoint": resumed_right}))


if __name__ == "__main__":
    app.run(main)
