"""Runs the toy recipe in its own process, for kill/resume and multi-process tests:

  python -m tests.toy_worker WORKDIR STEPS [COORDINATOR_ADDRESS NUM_PROCESSES PROCESS_ID]
"""

import sys

import numpy as np
from absl import logging

from jaxface.train import devices, loop
from tests.toy_recipe import toy_stages

if __name__ == "__main__":
    workdir, steps = sys.argv[1], int(sys.argv[2])
    if len(sys.argv) > 3:
        devices.initialize_distributed(sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    logging.set_verbosity(logging.WARNING)
    store = loop.run_stages(toy_stages(steps=(steps, steps)), workdir=workdir,
                            options=loop.LoopOptions(checkpoint_every_steps=3, keep_checkpoints=2,
                                                     log_every_seconds=600))
    final = store.load("student")["student"]["params"]
    np.save(f"{workdir}/final_kernel.npy", np.asarray(final["Dense_0"]["kernel"]))
