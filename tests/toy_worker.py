"""Runs the toy recipe in its own process, for kill/resume and multi-process tests:

  python -m tests.toy_worker WORKDIR STEPS [COORDINATOR_ADDRESS NUM_PROCESSES PROCESS_ID]

Trains both toy stages for STEPS steps each (checkpoints every 3 steps) and saves the student's final
kernel as WORKDIR/final_kernel.npy. Exits with 143 after SIGTERM. TOY_DONE_MARKER_DELAY=seconds makes
process 0 slow to mark stages done.
"""

import os
import sys
import time

import jax
import numpy as np
from absl import logging

from jaxface.train import checkpoints, devices, loop
from tests.toy_recipe import toy_stages



def delay_done_markers_of_process_0(seconds: float) -> None:
    """Process 0 writes each stage's DONE marker `seconds` late, as on a loaded host or a slow shared
    disk: the other processes must not race ahead and find the stage unfinished."""
    write = checkpoints.write_done_marker

    def late_write(directory, summary):
        time.sleep(seconds)
        write(directory, summary)

    checkpoints.write_done_marker = late_write


if __name__ == "__main__":
    workdir, steps = sys.argv[1], int(sys.argv[2])
    if len(sys.argv) > 3:
        devices.initialize_distributed(sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    if os.environ.get("TOY_DONE_MARKER_DELAY"):
        delay_done_markers_of_process_0(float(os.environ["TOY_DONE_MARKER_DELAY"]))
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
