r"""Does the training core cost anything, and can the input pipeline keep up? For any recipe, times the
train step of its main method's stage as the core runs it (`devices.compile_step`: shard_map over the mesh,
TrainState, per-device key, metric pmean, control word) against a bare `jax.jit` step of the same networks,
losses and optimizer (`experiments/bare_steps.py`) on the same devices (on several, `jax.jit` partitions
the bare step itself: replicated state, the batch split as the core splits it), both on a real batch of the
stage's own data source, and prints the ratio of their img/s (target >= 0.97; on a mesh of n devices it is
also the per-device ratio, both steps using the same n). Before timing,
both steps must log the same losses at steps 1-3 from the same initial variables (relative 1e-4): the
proof that the bare step does the same computation. Then the stage's batch source is timed on the host
in one thread, its examples/s printed beside what the core's step consumes.

  python -m experiments.bench --config=configs/distill.py --steps=50 --repeats=5          # student_kd_both
  python -m experiments.bench --config=configs/multitask.py --steps=50 --repeats=5        # stage3
  python -m experiments.bench --config=configs/mutual.py --steps=50 --repeats=5           # mutual_r1
  python -m experiments.bench --config=configs/semi_distill.py --steps=50 --repeats=5     # semi_kd_p10
  python -m experiments.bench --config=configs/sr_recognition.py --steps=50 --repeats=5   # joint
  python -m experiments.bench --config=configs/distill.py --stage=student_kd_hr           # another stage
  python -m experiments.bench --config=configs/distill.py:lr128 --steps=100               # GPU
  python -m experiments.bench --config=configs/mutual.py:smoke --steps=2 --repeats=1 --pipeline_steps=5

Stages read by the timed one (teachers, the previous round or curriculum stage) are used at their initial
weights, untrained: the speed does not depend on them. Data sets are prepared on first use into
`config.data.data_dir` (`--config.data.data_dir=DIR`), as `experiments.run` does.
"""

import os
import sys
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from experiments import bare_steps
from jaxface.recipes import get_recipe
from jaxface.train import devices, loop
from jaxface.train.state import TrainState

_CONFIG = config_flags.DEFINE_config_file("config", "configs/distill.py", "Config file, optionally `path.py:variant`.",
                                          lock_config=True)
_STAGE = flags.DEFINE_string("stage", None, "Stage whose step is timed (default: the main method's, MAIN_STAGE).")
_STEPS = flags.DEFINE_integer("steps", 30, "Timed steps per variant (after 3 warm-up steps).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Alternating timing rounds; the best of each is kept.")
_PIPELINE_STEPS = flags.DEFINE_integer("pipeline_steps", 200, "Batches read to time the input pipeline (0: skip).")

LOSS_RTOL, CHECKED_STEPS = 1e-4, 3
MAIN_STAGE = {  # the stage of each recipe's main method (semi_distill: at its largest label fraction)
    "distill": lambda c: "student_kd_both", "multitask": lambda c: "stage3", "mutual": lambda c: "mutual_r1",
    "sr_recognition": lambda c: "joint",
    "semi_distill": lambda c: "semi_kd_" + max(c.data.label_fractions, key=c.data.label_fractions.get)}
HOST_WORK = {  # what each recipe's batch source does on the host, for the pipeline line
    "distill": lambda c: f"{c.data.builder_config} train split {'in memory' if c.data.in_memory else 'on disk'}, "
                         "CenterNet targets encoded",
    "multitask": lambda c: "faces in memory, label masks", "mutual": lambda c: "cells in memory, fused labels",
    "semi_distill": lambda c: "labeled + unlabeled crops, weak and strong views",
    "sr_recognition": lambda c: "P identities x K faces, each blurred and downsampled"}


def fail(message: str):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_flags(argv):
    """absl's parser; a config file, variant or override that does not load is one line (exit code 2)."""
    try:
        parsed = flags.FLAGS(argv)
        _CONFIG.value.recipe  # ml_collections defers the failure to load a file to the first access
        return parsed
    except flags.Error as e:
        lines = [line for line in str(e).splitlines() if line.strip()]
        fail(lines[0] if len(lines) == 1 else f"{lines[0].rstrip(':')}: {lines[-1]}")
    except OSError:
        path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), "configs/distill.py")
        configs = sorted(f"configs/{f}" for f in os.listdir("configs") if f.endswith(".py") and f[0] != "_") \
            if os.path.isdir("configs") else ["(none here: run from the repository root)"]
        fail(f"--config={path} could not be loaded (no such file?); allowed: {', '.join(configs)}")
    except (AttributeError, KeyError, TypeError, ValueError) as e:  # ml_collections: a misspelt key, a wrong type
        fail("bad config override: " + " ".join(str(e).strip("'\"").replace("\\n", " ").replace("\\'", "'").split()))


def recipe_and_stage(config, stage_name):
    """(recipe name, the stage to time, {name: stage}); a bad recipe, config or stage is one error line."""
    name = config.recipe
    if name not in bare_steps.BARE_STEPS:
        fail(f"config.recipe={name!r} has no bare step; allowed: {', '.join(bare_steps.BARE_STEPS)}")
    recipe = get_recipe(name)
    try:
        recipe.validate_config(config)
    except (ValueError, KeyError, FileNotFoundError) as e:
        fail(str(e))
    stages = {s.name: s for s in recipe.make_stages(config, recipe.load_data(config))}
    trained = [s for s, stage in stages.items() if not stage.is_derived]
    stage_name = stage_name or MAIN_STAGE[name](config)
    if stage_name not in trained:
        fail(f"--stage={stage_name} is not a trained stage of {name}; allowed: {', '.join(trained)}")
    return name, stages[stage_name], stages


def untrained_loader(stages: dict, key):
    """load(stage) -> that stage's models at their initial weights (memoised): what a stage reads from
    earlier ones (teachers, the previous round or curriculum stage), without training them."""
    made = {}

    def load(name):
        if name not in stages:
            fail(f"the stage reads {name!r}, which this config does not train (read from another run?)")
        if name not in made:
            made[name] = jax.device_get(stages[name].init(key, load))
        return made[name]

    return load


def time_steps(run_one, steps: int) -> float:
    """Seconds per call of `run_one` over `steps` calls, after 3 warm-up calls."""
    for _ in range(3):
        out = run_one()
    jax.block_until_ready(out)
    t0 = time.perf_counter()
    for _ in range(steps):
        out = run_one()
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / steps


def core_runner(stage, variables, frozen, batch_np, mesh, rng):
    """run() -> loss of one step as the core runs it: `compile_step` over the mesh, TrainState, control word."""
    state = devices.replicate(TrainState.create(variables=variables, tx=stage.optimizers, rng=rng), mesh)
    frozen, batch = devices.replicate(frozen, mesh), devices.shard_batch(batch_np, mesh)
    step, sync, no_stop = devices.compile_step(stage.step, mesh), devices.needs_step_sync(mesh), \
        devices.stop_flags(mesh)[False]

    def run():
        nonlocal state
        state, metrics, _ = step(state, frozen, batch, no_stop)
        if sync:  # simulated CPU devices deadlock otherwise (STACK-NOTES)
            jax.block_until_ready(state)
        return metrics["loss"]

    return run


def bare_runner(bare: bare_steps.Bare, variables, frozen, batch_np, mesh):
    """run() -> loss of one step of the bare jitted step on the mesh: its state replicated, the batch
    split over the devices like the core's, and `jax.jit` (GSPMD) left to partition the one-device program
    (BatchNorm's batch means and the losses' sums over the batch become its all-reduces). On one device
    this is the plain jitted step."""
    carry = devices.replicate((*bare.init(variables), np.int32(0)), mesh)
    frozen, batch = devices.replicate(frozen, mesh), devices.shard_batch(batch_np, mesh)
    sync = devices.needs_step_sync(mesh)

    def run():
        nonlocal carry
        *carry, loss = bare.step(*carry, frozen, batch)
        if sync:  # as for the core: simulated CPU devices deadlock otherwise (STACK-NOTES)
            jax.block_until_ready(carry)
        return loss

    return run


def main(argv):
    config = _CONFIG.value
    recipe, stage, stages = recipe_and_stage(config, _STAGE.value)
    mesh = devices.make_mesh()
    init_key, state_key, load_key = jax.random.split(loop.seed_key(config.seed), 3)
    load = untrained_loader(stages, load_key)
    # host copies: each path gets buffers of its own (both donate theirs)
    variables, frozen = jax.device_get(stage.init(init_key, load)), jax.device_get(stage.frozen(load))
    source = stage.resolve_data(load)
    batch_np = source.local_batch(0)  # real data: the stage's first batch, every step
    run_core = core_runner(stage, variables, frozen, batch_np, mesh, state_key)
    # on the same devices: the per-device ratio is the ratio of the two steps' img/s on the same mesh
    run_bare = bare_runner(bare_steps.BARE_STEPS[recipe](config, stage), variables, frozen, batch_np, mesh)

    n_dev, b = mesh.devices.size, source.global_batch_size
    print(f"device: {devices.describe(mesh)}")
    print(f"{stage.name} train step ({recipe}), batch {b}, best of {_REPEATS.value} x {_STEPS.value} steps")
    # from the same variables: step 1 checks the loss, steps 2-3 the update (with a warmup the first has rate 0)
    check_same_loss(*([float(run()) for _ in range(CHECKED_STEPS)] for run in (run_core, run_bare)))
    core_t, bare_t = [], []
    for _ in range(_REPEATS.value):  # alternate so drifts in machine load hit both alike
        core_t.append(time_steps(run_core, _STEPS.value))
        bare_t.append(time_steps(run_bare, _STEPS.value))
    core_ips, bare_ips = b / min(core_t), b / min(bare_t)
    print(f"  {f'core (compile_step, {n_dev} device(s)):':38s}{min(core_t) * 1e3:8.2f} ms/step {core_ips:9.1f} img/s")
    bare_label = f"bare jax.jit ({n_dev} device(s){', GSPMD' if n_dev > 1 else ''}):"
    print(f"  {bare_label:38s}{min(bare_t) * 1e3:8.2f} ms/step {bare_ips:9.1f} img/s")
    print(f"  ratio core/bare (img/s{' per device, the same ' + str(n_dev) + ' devices' if n_dev > 1 else ''}): "
          f"{core_ips / bare_ips:.3f}")
    if _PIPELINE_STEPS.value:
        rate, work = pipeline_examples_per_second(source, _PIPELINE_STEPS.value), HOST_WORK[recipe](config)
        print(f"input pipeline ({stage.name} batches: {type(source).__name__}, {work}; one thread): "
              f"{rate:9.1f} examples/s = {rate / core_ips:.2f}x what the core's step consumes")
        workers = loop.resolve_data_workers(loop.LoopOptions.from_config(config).data_workers)
        rate = prefetcher_examples_per_second(source, mesh, workers, _PIPELINE_STEPS.value)
        print(f"input pipeline through the loop's prefetcher ({workers} thread(s), train.data_workers): "
              f"{rate:9.1f} examples/s = {rate / core_ips:.2f}x what the core's step consumes")


def check_same_loss(core: list, bare: list) -> None:
    """Same variables, same batch: a bare step that computes the same thing logs the same losses."""
    gap = max(abs(c - b) / max(abs(c), 1e-12) for c, b in zip(core, bare))
    same = f" <= {LOSS_RTOL:.0e}: same computation" if gap <= LOSS_RTOL else ""
    print(f"  loss at steps 1-{len(core)}: core {', '.join(f'{x:.7g}' for x in core)}; "
          f"bare {', '.join(f'{x:.7g}' for x in bare)} (relative difference {gap:.1e}{same})")
    if not same:
        print(f"error: the bare step's loss differs from the core's by {gap:.1e} > {LOSS_RTOL:.0e}: it does not "
              f"do the same computation (experiments/bare_steps.py)", file=sys.stderr)
        sys.exit(1)


def pipeline_examples_per_second(source, steps: int) -> float:
    """Examples/s of the stage's batch source over `steps` consecutive batches after the first."""
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        source.local_batch(step)
    return steps * source.global_batch_size / (time.perf_counter() - t0)


def prefetcher_examples_per_second(source, mesh, workers: int, steps: int) -> float:
    """Examples/s through the loop's prefetcher (`workers` threads, batches sharded over `mesh`) over
    `steps` batches, after the first `workers + 1` (read while its threads start)."""
    warmup = workers + 1
    prefetch = loop.Prefetcher(source, mesh, range(1, 1 + warmup + steps), workers)
    try:
        for _ in range(warmup):
            prefetch.next()
        t0 = time.perf_counter()
        for _ in range(steps):
            batch = prefetch.next()
        jax.block_until_ready(batch)
        return steps * source.global_batch_size / (time.perf_counter() - t0)
    finally:
        prefetch.close()


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
