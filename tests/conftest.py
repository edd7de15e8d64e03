"""Test-wide settings, applied before jax is first imported.

- 8 simulated CPU devices, so the multi-device code paths run in the default suite.
- One throwaway persistent compilation cache for the session, shared by the tests in this process and
  the `experiments.run` subprocesses (a smoke stage compiled in-process is not compiled again by a CLI
  test of the same config).
- XLA backend optimisation off: the tests run tiny programs for a few steps, where compilation
  dominates (a smoke stage compiles ~3x faster). Comparisons in tests are within this setting.
"""

import atexit
import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8",
                                    "--xla_backend_optimization_level=0"]).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# experiments.run subprocesses share one throwaway compilation cache instead of the user's ~/.cache
if "JAXFACE_COMPILATION_CACHE" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="jaxface_xla_")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAXFACE_COMPILATION_CACHE"] = _cache
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.environ["JAXFACE_COMPILATION_CACHE"])
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")  # as experiments.run sets it


import pytest  # noqa: E402  (after the environment is set)


@pytest.fixture(scope="session")
def gestures_data_dir(tmp_path_factory):
    """One prepared `synthetic_gestures/smoke` for the whole session."""
    from jaxface.data import synthetic_gestures

    path = str(tmp_path_factory.mktemp("tfds"))
    synthetic_gestures.prepare("smoke", path)
    return path


@pytest.fixture(scope="session")
def distill_smoke_run(gestures_data_dir, tmp_path_factory):
    """`configs/distill.py:smoke` trained and evaluated in-process on 8 devices: (workdir, results)."""
    from configs import distill as distill_config
    from jaxface.recipes import distill
    from jaxface.train import driver

    config = distill_config.get_config("smoke")
    config.data.data_dir = gestures_data_dir
    workdir = tmp_path_factory.mktemp("distill_smoke")
    return workdir, driver.train_and_evaluate(distill, config, str(workdir))


@pytest.fixture(scope="session")
def multitask_smoke_run(tmp_path_factory):
    """`configs/multitask.py:smoke` trained and evaluated in-process on 8 devices: (workdir, results, config)."""
    from configs import multitask as multitask_config
    from jaxface.recipes import multitask
    from jaxface.train import driver

    config = multitask_config.get_config("smoke")
    config.data.data_dir = str(tmp_path_factory.mktemp("faces_tfds"))
    workdir = tmp_path_factory.mktemp("multitask_smoke")
    return workdir, driver.train_and_evaluate(multitask, config, str(workdir)), config


SHARED_RUNS = ("distill_smoke_run", "multitask_smoke_run")


def pytest_itemcollected(item):
    """Under pytest-xdist (`-n auto --dist loadgroup`, the README's command), the tests that read one
    session-wide smoke run are sent to the same worker, so each run is trained once, not once per worker.
    Marked as each test is collected, before any `pytest_collection_modifyitems` (where xdist reads them)."""
    shared = [name for name in SHARED_RUNS if name in item.fixturenames]
    if shared:
        item.add_marker(pytest.mark.xdist_group(shared[0]))

