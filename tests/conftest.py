"""Test-wide settings, applied before jax is first imported.

- 8 simulated CPU devices, so the multi-device code paths run in the default suite.
- XLA backend optimisation off: the tests run tiny programs for a few steps, where compilation
  dominates (a smoke stage compiles ~3x faster). Comparisons in tests are within this setting.
"""

import os

os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8",
                                    "--xla_backend_optimization_level=0"]).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
