"""Device mapping: one mesh axis 'data' over every device of every process.

Step functions are written per device (pmap style) with named-axis collectives over `AXIS`; the core
wraps them in `jax.shard_map` inside `jax.jit`, the supported successor of `jax.pmap`. Arrays are
global `jax.Array`s: the state is replicated, batches are split along their leading axis, first
across processes (each reads only its own slice) and then across that process's devices. On a mesh
of one device the collectives are skipped (`mean_over_devices`, `losses.reduction.spans_devices`,
`batch_norm_axis`): they are the identity there, and XLA's one-participant all-reduces only cost time.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax import lax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxface.losses.reduction import spans_devices
from jaxface.train import optimizers
from jaxface.train.stages import StepFn

AXIS = "data"


def batch_norm_axis(train: bool) -> str | None:
    """The axis a training step's BatchNorm averages its batch statistics over: `AXIS` (statistics of the
    global batch) when there is more than one device, else None (inference, or one device, whose batch is
    the global one: the cross-device mean would only add all-reduces, 9 % of semi_distill's CPU step)."""
    return AXIS if train and jax.device_count() > 1 else None


def on_cloud_tpu_vm() -> bool:
    """Whether TPU chips are attached to this machine (checked on the PCI bus, without starting JAX)."""
    try:
        from jax._src import hardware_utils  # JAX's own check; private, so any failure means 'no'
        return hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0
    except Exception:  # noqa: BLE001
        return False


def wants_auto_distributed(setting: str | None, on_tpu_vm: bool) -> bool:
    """JAXFACE_DISTRIBUTED: '1' always lets JAX discover the cluster, '0' never; unset: on Cloud TPU VMs."""
    if setting not in (None, "", "0", "1"):
        raise ValueError(f"JAXFACE_DISTRIBUTED={setting!r}; allowed: 1 (discover the cluster), 0 (single process), "
                         f"or unset (discover on Cloud TPU VMs)")
    return setting == "1" or (not setting and on_tpu_vm)


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    """Joins a multi-process run; a no-op for a single process.

    - Cloud TPU VMs: JAX discovers the pod slice itself; this happens without being asked.
    - SLURM / Open MPI / GKE: set JAXFACE_DISTRIBUTED=1 and JAX discovers the cluster.
    - Other GPU clusters: pass the coordinator address ('host:port' of process 0), the number of
      processes and this process's id (experiments.run flags or JAXFACE_COORDINATOR_ADDRESS,
      JAXFACE_NUM_PROCESSES, JAXFACE_PROCESS_ID).
    """
    explicit = coordinator_address is not None
    if explicit and (num_processes is None or process_id is None):
        raise ValueError("--coordinator_address needs --num_processes and --process_id as well")
    if not explicit and not wants_auto_distributed(os.environ.get("JAXFACE_DISTRIBUTED"), on_cloud_tpu_vm()):
        return
    # CPU collectives across processes (tests on one machine, CPU clusters); no effect on GPU/TPU.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if explicit:
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id)
    else:
        jax.distributed.initialize()
    logging.info("joined distributed run: process %d of %d", jax.process_index(), jax.process_count())


def main_process_first(fn: Callable[[], Any]) -> Any:
    """Runs `fn` on process 0, waits for it on all processes, then runs it on the others: for steps
    such as preparing a data set that must not race on a shared disk (and are no-ops once done)."""
    if jax.process_count() == 1:
        return fn()
    result = fn() if jax.process_index() == 0 else None
    barrier("main process first")
    return result if jax.process_index() == 0 else fn()


def main_process_value(value: Any) -> Any:
    """Process 0's `value` on every process: for decisions that must not differ between processes
    (whether a stage is finished, read from a shared disk that may lag), since processes that take
    different branches deadlock in their next collective."""
    if jax.process_count() == 1:
        return value
    return type(value)(multihost_utils.broadcast_one_to_all(np.asarray(value)).item())


def main_process_json(value: Any) -> Any:
    """Process 0's JSON-able `value` on every process (e.g. a validation history read from disk)."""
    if jax.process_count() == 1:
        return value
    import json

    data = np.frombuffer(json.dumps(value).encode(), np.uint8) if jax.process_index() == 0 else np.zeros(0, np.uint8)
    padded = np.zeros(main_process_value(int(data.size)), np.uint8)
    padded[:data.size] = data[:padded.size]
    return json.loads(bytes(multihost_utils.broadcast_one_to_all(padded)).decode())


def any_process(flag: bool) -> bool:
    """True on every process if `flag` is true on any one (e.g. only some hosts got SIGTERM)."""
    if jax.process_count() == 1:
        return flag
    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag, np.int32))))


def barrier(name: str) -> None:
    """Waits until every process reaches `name` (no-op for a single process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"jaxface: {name}")


def make_mesh(devices: Any = None) -> Mesh:
    """A 1-D mesh named `AXIS` over all devices (all processes), in process-major order."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (AXIS,))


def describe(mesh: Mesh) -> str:
    d = mesh.devices.flat[0]
    return (f"{mesh.devices.size} device(s) of kind {d.device_kind!r} (platform {d.platform}), "
            f"{jax.local_device_count()} local, process {jax.process_index()} of {jax.process_count()}")


def needs_step_sync(mesh: Mesh) -> bool:
    """Simulated CPU devices deadlock when steps with collectives are queued back to back
    (STACK-NOTES); waiting for each step there costs little. Accelerators keep async dispatch."""
    return mesh.devices.flat[0].platform == "cpu" and mesh.devices.size > 1


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Host values (identical on every process) -> arrays replicated on every device of the mesh."""
    sharding = NamedSharding(mesh, P())

    def put(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            # typed keys travel as their raw uint32 data (device_put cannot target other hosts' devices)
            data = put(jax.random.key_data(x))
            return jax.jit(partial(jax.random.wrap_key_data, impl=jax.random.key_impl(x)),
                           out_shardings=sharding)(data)
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(put, tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(AXIS))


def local_batch_size(global_batch_size: int, mesh: Mesh) -> int:
    """This process's share of the global batch; each device gets an equal slice."""
    n = mesh.devices.size
    if global_batch_size % n:
        raise ValueError(f"batch size {global_batch_size} is not divisible by the {n} devices; "
                         f"use a multiple of {n}")
    return global_batch_size // jax.process_count()


def shard_batch(local_batch: dict, mesh: Mesh) -> dict:
    """{name: np.ndarray [local_batch, ...]} from this process -> global arrays split over `AXIS`."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}


def stop_flags(mesh: Mesh) -> dict[bool, jax.Array]:
    """{flag: [num_devices] int32 array split over `AXIS`}, this process's part filled with `flag`:
    the per-process 'a stop was requested here' input of a compiled step (built once, reused)."""
    n = len(mesh.local_devices)
    return {flag: jax.make_array_from_process_local_data(batch_sharding(mesh), np.full((n,), flag, np.int32))
            for flag in (False, True)}


def compile_step(step_fn: StepFn, mesh: Mesh, *, donate: bool = True) -> Callable:
    """Maps a per-device step over the mesh, jitted once.

    step_fn(state, frozen, batch, rng) -> (state, metrics) sees this device's slice of the batch and a
    per-device key (the step key folded with the device index); the compiled step then advances
    `state.step` by one and adds the learning rates the step used to its metrics
    (`optimizers.learning_rates`). It must average its gradients with
    `lax.pmean(grads, AXIS)` (see `value_and_mean_grad`), so the returned state is the same
    on every device. Metrics are averaged over devices here.

    Returns f(state, frozen, batch, stop) -> (state, metrics, control), donating the old state's
    buffers. `stop` is one of `stop_flags(mesh)` (whether this process was asked to stop); `control`
    = {'stop': any process asked, 'finite': every metric is finite} is the same on every process, so
    all of them take the same decision at the same step without an extra synchronisation.
    """

    def per_device(state, frozen, batch, stop):
        rng = jax.random.fold_in(state.step_rng(), lax.axis_index(AXIS))
        state, metrics = step_fn(state, frozen, batch, rng)
        state = state.replace(step=state.step + 1)  # one step, however many updates it made
        metrics = {**optimizers.learning_rates(state), **metrics}
        metrics = mean_over_devices({k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()})
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in metrics.values()])) if metrics else True
        stop = lax.pmax(stop[0], AXIS) if spans_devices(AXIS) else stop[0]
        control = {"stop": stop > 0, "finite": jnp.asarray(finite)}
        return state, metrics, control

    donate_argnums = (0,) if donate else ()
    # check_vma=False keeps pmap semantics: gradients of replicated params are per-device until the
    # step's explicit pmean (with it on, autodiff would already sum them and an explicit pmean would
    # silently give n-times gradients).
    mapped = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(), P(AXIS), P(AXIS)), out_specs=(P(), P(), P()),
                           check_vma=False)
    return jax.jit(mapped, donate_argnums=donate_argnums)


def value_and_mean_grad(loss_fn: Callable, params: Any, *args, **kwargs):
    """Per-device `jax.value_and_grad(loss_fn, has_aux=True)` with gradients averaged over `AXIS`.

    loss_fn(params, *args, **kwargs) -> (local loss, aux). Use inside a step function; returns
    ((local loss, aux), mean gradients).
    """
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, *args, **kwargs)
    return (loss, aux), mean_over_devices(grads)


def mean_over_devices(tree: Any) -> Any:
    """`lax.pmean(tree, AXIS)` inside a mapped step; on a mesh of one device the tree itself (a
    one-participant all-reduce is kept by XLA and blocks fusion: `losses.reduction.spans_devices`)."""
    return lax.pmean(tree, AXIS) if spans_devices(AXIS) else tree
