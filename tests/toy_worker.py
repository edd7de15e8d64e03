"""Runs the toy recipe in its own process, for kill/resume and multi-process tests:

  python -m tests.toy_worker WORKDIR STEPS [COORDINATOR_ADDRESS NUM_PROCESSES PROCESS_ID]

Trains both toy stages for STEPS steps each (checkpoints every 3 steps) and saves the student's final
kernel as WORKDIR/final_kernel.npy. Exits like experiments.run: 143 after SIGTERM, 4 on NaN.
"""

import sys

import jax
import numpy as np
from absl import logging

from jaxface.train import devices, loop
from tests.toy_recipe import toy_stages

if __name__ == "__main__":
    workdir, steps = sys.argv[1], int(sys.argv[2])
    if len(sys.argv) > 3:
        devices.initialize_distributed(sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    logging.set_verbosity(logging.WARNING)
    try:
        store = loop.run_stages(toy_stages(steps=(steps, steps)), workdir=workdir,
                                options=loop.LoopOptions(checkpoint_every_steps=3, keep_checkpoints=2,
                                                         log_every_seconds=600))
    except loop.Preempted as e:
        logging.warning("%s", e)
        raise
    final = store.load("student")["student"]["params"]
    if jax.process_index() == 0:
        np.save(f"{workdir}/final_kernel.npy", np.asarray(final["Dense_0"]["kernel"]))
