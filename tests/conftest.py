"""Every test sees 8 simulated CPU devices, so multi-device code paths run in the default suite.
(The flag must be set before jax is first imported.)"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
