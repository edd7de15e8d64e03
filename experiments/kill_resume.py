r"""Kill -9 a training run at random moments, restart it each time, and check that it still finishes
bit-identical to an uninterrupted run (every stage's final parameters and every logged loss).

  python -m experiments.kill_resume --config=configs/distill.py:smoke --trials=20 --kills=3

Prints one line per trial and the count of identical finishes (target: all of them).
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
from jaxface.train.writers import read_metrics

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
    same = 0
    for trial in range(_TRIALS.value):
        workdir = os.path.join(root, f"trial{trial}")
        kills = 0
        for target in sorted(rng.integers(1, total_steps, size=_KILLS.value)):
            proc = subprocess.Popen(run_command(workdir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while proc.poll() is None and finished_steps(workdir) < target:
                time.sleep(0.05)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait()
        subprocess.run(run_command(workdir), check=True, capture_output=True)
        ok = identical(final_params(workdir), ref_params) and read_metrics(workdir) == ref_losses
        same += ok
        print(f"trial {trial}: {kills} kills, {'identical' if ok else 'DIFFERENT'} "
              f"({time.time() - t0:.0f} s so far)", flush=True)
    print(json.dumps({"config": _CONFIG.value, "trials": _TRIALS.value, "kills_per_trial": _KILLS.value,
                      "identical_finishes": same}))


if __name__ == "__main__":
    app.run(main)
