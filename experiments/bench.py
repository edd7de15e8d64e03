r"""Does the training core cost anything, and can the input pipeline keep up? Times the two-teacher
distillation step as the core runs it (shard_map over the mesh, TrainState, per-device key, metric pmean)
against a bare `jax.jit` step of the same networks, losses and optimizer, in one process, and prints the
ratio (target >= 0.97); then times the stage's own batch source (the real train split, target encoding
included) in one thread and prints its examples/s beside what the step consumes.

  python -m experiments.bench --config=configs/distill.py --steps=50
  python -m experiments.bench --config=configs/distill.py:lr128 --steps=100      # GPU
"""

import time

import jax
import numpy as np
import optax
from absl import app, flags
from ml_collections import config_flags

from jaxface.data import synthetic_gestures
from jaxface.losses import centernet_loss, feature_distillation_loss, head_distillation_loss
from jaxface.recipes import distill
from jaxface.train import devices
from jaxface.train.optimizers import make_optimizer
from jaxface.train.state import TrainState

_CONFIG = config_flags.DEFINE_config_file("config", "configs/distill.py", "Config file.", lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 30, "Timed steps per variant (after 3 warm-up steps).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Alternating timing rounds; the best of each is kept.")
_PIPELINE_STEPS = flags.DEFINE_integer("pipeline_steps", 200, "Batches read to time the input pipeline (0: skip).")


def synthetic_batch(config, batch_size: int) -> dict:
    """Random images with real CenterNet targets from generated scenes (no data set needed)."""
    examples = [synthetic_gestures.generate_example("train", i, lr_size=distill._input_size(config))
                for i in range(batch_size)]
    batch = {k: np.stack([np.asarray(e[k]) for e in examples]) for k in ("image", "image_hr", "boxes", "labels")}
    return distill._with_targets(batch, output_size=distill._output_size(config), keep=("image", "image_hr"))


def bare_step_fn(config):
    """The same computation as the recipe's student_kd_both step, written as one plain jitted function."""
    student = distill.build_detector(config, "student", train=False).clone(bn_axis_name=None)
    teachers = {t: distill.build_detector(config, f"teacher_{t}", train=False) for t in distill.TEACHERS}
    adapters = {t: distill.FeatureAdapter(channels=tuple(config.models[f"teacher_{t}"]["widths"]))
                for t in distill.TEACHERS}
    tx = make_optimizer(config.optimizer, 10_000)

    def step(params, stats, opt_state, frozen, batch):
        t_out = {t: teachers[t].apply(frozen[t], batch[distill.IMAGE_KEY[f"teacher_{t}"]], train=False)
                 for t in teachers}

        def loss_fn(p):
            out, upd = student.apply({"params": p["student"], "batch_stats": stats}, batch["image"], train=True,
                                     mutable=["batch_stats"])
            loss, _ = centernet_loss(out["heads"], batch, wh_weight=config.loss.wh_weight,
                                     offset_weight=config.loss.offset_weight)
            for t in teachers:
                adapted = adapters[t].apply({"params": p[f"adapter_{t}"]}, out["features"])
                feat = feature_distillation_loss(adapted, t_out[t]["features"])
                w = config.loss
                head = head_distillation_loss(out["heads"], t_out[t]["heads"], batch["mask"],
                                              wh_weight=w.wh_weight, offset_weight=w.offset_weight)[0]
                loss += (w[f"feature_weight_{t}"] * feat + w[f"head_weight_{t}"] * head) / len(teachers)
            return loss, upd["batch_stats"]

        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        new_params, new_opt = {}, {}
        for name in params:
            updates, new_opt[name] = tx.update(grads[name], opt_state[name], params[name])
            new_params[name] = optax.apply_updates(params[name], updates)
        return new_params, stats, new_opt, loss

    return jax.jit(step, donate_argnums=(0, 1, 2)), tx


def time_steps(run_one, steps: int) -> float:
    for _ in range(3):
        out = run_one()
    jax.block_until_ready(out)
    t0 = time.perf_counter()
    for _ in range(steps):
        out = run_one()
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / steps


def main(argv):
    config = _CONFIG.value
    mesh = devices.make_mesh()
    batch_np = synthetic_batch(config, config.train.batch_size)
    stage = next(s for s in distill.make_stages(config, {"train": [None]}) if s.name == "student_kd_both")
    variables = stage.init(jax.random.key(0), None)
    frozen = {t: distill._init_detector(config, f"teacher_{t}", jax.random.key(i))
              for i, t in enumerate(distill.TEACHERS)}

    # the core's path
    state = devices.replicate(TrainState.create(variables=variables, tx=stage.optimizers, rng=jax.random.key(0)),
                              mesh)
    frozen_dev = devices.replicate(frozen, mesh)
    batch = devices.shard_batch(batch_np, mesh)
    core_step = devices.compile_step(stage.step, mesh)
    sync = devices.needs_step_sync(mesh)
    no_stop = devices.stop_flags(mesh)[False]

    def run_core(step=core_step):
        nonlocal state
        state, metrics, _ = step(state, frozen_dev, batch, no_stop)
        if sync:
            jax.block_until_ready(state)
        return metrics

    # the bare path, on one device (the core's mesh may have several on accelerators: compare per device)
    bare, tx = bare_step_fn(config)
    params = jax.device_put({k: v["params"] for k, v in variables.items()})
    stats = jax.device_put(variables["student"]["batch_stats"])
    opt_state = {k: tx.init(p) for k, p in params.items()}
    bare_batch, bare_frozen = jax.device_put(batch_np), jax.device_put(frozen)

    def run_bare():
        nonlocal params, stats, opt_state
        params, stats, opt_state, loss = bare(params, stats, opt_state, bare_frozen, bare_batch)
        return loss

    n_dev = mesh.devices.size
    core_t, bare_t = [], []
    for _ in range(_REPEATS.value):  # alternate so drifts in machine load hit both alike
        core_t.append(time_steps(run_core, _STEPS.value))
        bare_t.append(time_steps(run_bare, _STEPS.value))
    b = config.train.batch_size
    core_ips, bare_ips = b / min(core_t), b / min(bare_t)
    print(f"device: {devices.describe(mesh)}")
    print(f"student_kd_both train step, batch {b}, best of {_REPEATS.value} x {_STEPS.value} steps")
    print(f"  {f'core (shard_map over {n_dev} device(s)):':38s}{min(core_t) * 1e3:8.2f} ms/step {core_ips:9.1f} img/s")
    print(f"  {'bare jax.jit (1 device):':38s}{min(bare_t) * 1e3:8.2f} ms/step {bare_ips:9.1f} img/s")
    print(f"  ratio core/bare (img/s{' per device' if n_dev > 1 else ''}): {core_ips / n_dev / bare_ips:.3f}")
    if _PIPELINE_STEPS.value:
        rate = pipeline_examples_per_second(config, _PIPELINE_STEPS.value)
        print(f"input pipeline (student_kd_both batches: {config.data.builder_config} train split, "
              f"{'in memory' if config.data.in_memory else 'on disk'}, CenterNet targets; one thread): "
              f"{rate:9.1f} examples/s = {rate / core_ips:.2f}x what the core's step consumes")


def pipeline_examples_per_second(config, steps: int) -> float:
    """Examples/s of the `student_kd_both` stage's batch source over `steps` consecutive batches."""
    data = distill.load_data(config)
    source = next(s for s in distill.make_stages(config, data) if s.name == "student_kd_both").data
    source.local_batch(0)  # first epoch's permutation
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        source.local_batch(step)
    return steps * source.global_batch_size / (time.perf_counter() - t0)


if __name__ == "__main__":
    app.run(main)
