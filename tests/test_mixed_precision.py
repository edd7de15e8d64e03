"""Mixed precision: every recipe's main training stage trains in bfloat16 compute on CPU.

  python -m pytest -q tests/test_mixed_precision.py --durations=0

`compute_dtype='bfloat16'` means bfloat16 activations with float32 parameters, optimizer state and
losses. For each recipe, its own `make_stages` on its `:smoke` config and smoke data gives the stage
that trains the method; the core compiles that stage's step (`devices.compile_step`, one device) and
runs it NUM_STEPS steps in bfloat16. Asserted per recipe:
- the step computes its losses in float32, and everything the trained state holds stays float32;
- every logged metric is finite, and every trained model's parameters move;
- every convolution of the traced step (forward and backward, every network, teachers included) takes
  bfloat16 operands: a network that silently ignored `compute_dtype` would convolve in float32. (Seen
  red with distill's feature adapters built without the dtype, and with sr_recognition's
  `build_sr_net` dropping it; an earlier version compared against a float32 run, twice the compile.)

Stages that read earlier ones (teachers, a curriculum's previous stage) get those stages' models at
their initial weights: the precision of a step does not depend on how well its teachers are trained.
"""

import importlib

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from jaxface.train import devices, loop
from jaxface.train.state import TrainState

NUM_STEPS = 3  # step 1 runs at learning rate 0 (warmup from 0): parameters move from step 2 on
BATCH_SIZE = 8  # the smallest smoke batch; semi_distill asks for a multiple of the 8 devices the suite simulates

# (recipe, the stage that trains the method, its data fixture). mutual: round0 trains both U-Nets with the
# very step of the mutual rounds (`make_step(config, ('a', 'b'))`); only the rounds' labels differ, and
# those need a trained round 0 to predict them.
MAIN_STAGES = {"distill": ("student_kd_both", "gestures_data_dir"), "multitask": ("stage3", "faces_data_dir"),
               "mutual": ("round0", "cells_data_dir"), "semi_distill": ("semi_kd_p30", "gestures_data_dir"),
               "sr_recognition": ("joint", "faces_data_dir")}

# distill's student init applies the detector op by op to size its feature adapters (~3 s of eager dispatch
# on 2 cores); it is pure, so tracing it as one program gives the same variables ~2.5x faster. The other
# recipes' inits copy host arrays (`jax.device_get`) and run as the core runs them.
TRACEABLE_INIT = {"distill"}


@pytest.fixture(scope="module")
def faces_data_dir(tmp_path_factory):
    """`synthetic_faces/smoke` prepared once for this module (multitask and sr_recognition read it)."""
    from jaxface.data import synthetic_faces

    path = str(tmp_path_factory.mktemp("faces_tfds"))
    synthetic_faces.prepare("smoke", path)
    return path


@pytest.fixture(scope="module")
def cells_data_dir(tmp_path_factory):
    """`synthetic_cells/smoke` prepared once for this module (mutual reads it)."""
    from jaxface.data import synthetic_cells

    path = str(tmp_path_factory.mktemp("cells_tfds"))
    synthetic_cells.prepare("smoke", path)
    return path


# --- the recipe's stage, and its step as the core compiles it ------------------------------------
def smoke_config(name: str, data_dir: str, dtype: str):
    """The recipe's smoke config at BATCH_SIZE, computing in `dtype`."""
    config = importlib.import_module(f"configs.{name}").get_config("smoke")
    config.data.data_dir = data_dir
    config.train.batch_size = BATCH_SIZE
    (config.models if "models" in config else config.model).compute_dtype = dtype
    return config


def main_stage(name: str, config, data: dict):
    """(the recipe's main stage, all its stages by name), from its own `make_stages`."""
    recipe = importlib.import_module(f"jaxface.recipes.{name}")
    recipe.validate_config(config)
    stages = {s.name: s for s in recipe.make_stages(config, data)}
    return stages[MAIN_STAGES[name][0]], stages


def untrained_load(stages: dict, rng):
    """`load(stage)` as the core serves it, for stages never trained: their exported models at initial weights."""
    loaded = {}

    def load(name):
        if name not in loaded:
            stage = stages[name]
            variables = jax.device_get(stage.init(jax.random.fold_in(rng, len(loaded)), load))
            loaded[name] = {m: v for m, v in variables.items() if stage.export is None or m in stage.export}
        return loaded[name]

    return load


def recording(step_fn, seen: dict):
    """`step_fn` unchanged, noting in `seen` the dtypes of its own output while the core traces it: its
    metrics before the core casts them to float32, and the state it returns."""

    def step(state, frozen, batch, rng):
        state, metrics = step_fn(state, frozen, batch, rng)
        seen.update(metrics={k: str(v.dtype) for k, v in metrics.items()},
                    state=jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state))
        return state, metrics

    return step


def conv_operand_dtypes(jaxpr) -> list[tuple[str, ...]]:
    """The operand dtypes of every convolution in a (closed) jaxpr, its sub-jaxprs (jit, shard_map,
    the backward pass) included."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    found = [tuple(str(v.aval.dtype) for v in eqn.invars) for eqn in jaxpr.eqns
             if eqn.primitive.name == "conv_general_dilated"]
    return found + [dtypes for sub in jax.extend.core.subjaxprs(jaxpr) for dtypes in conv_operand_dtypes(sub)]


def train(stage, variables, frozen, batches, mesh):
    """The stage's step compiled by the core, one call per batch. `variables`: host arrays (the state is
    donated). Returns {'final': state on host, 'logged': metrics per step as logged (learning rates left
    out), 'finite': the core's 'all metrics finite' flag per step, 'traced': `recording`'s notes, 'convs':
    the operand dtypes of the step's convolutions}."""
    state = devices.replicate(TrainState.create(variables=variables, tx=stage.optimizers, rng=loop.seed_key(0)), mesh)
    traced = {}
    step, stop = devices.compile_step(recording(stage.step, traced), mesh), devices.stop_flags(mesh)[False]
    convs = conv_operand_dtypes(jax.make_jaxpr(step)(state, frozen, batches[0], stop))
    logged, finite = [], []
    for batch in batches:
        state, metrics, control = step(state, frozen, batch, stop)
        logged.append({k: float(v) for k, v in jax.device_get(metrics).items() if not k.startswith("learning_rate")})
        finite.append(bool(control["finite"]))
    return {"final": jax.device_get(state), "logged": logged, "finite": finite, "traced": traced, "convs": convs}


@pytest.fixture(params=list(MAIN_STAGES))
def runs(request):
    """The main stage of recipe `request.param` trained in bfloat16 (parameters float32)."""
    name = request.param
    data_dir = request.getfixturevalue(MAIN_STAGES[name][1])
    mesh = devices.make_mesh(jax.devices()[:1])
    bf16_config = smoke_config(name, data_dir, "bfloat16")
    data = importlib.import_module(f"jaxface.recipes.{name}").load_data(bf16_config)  # independent of the dtype
    stage, stages = main_stage(name, bf16_config, data)
    load = untrained_load(stages, loop.seed_key(1))
    init = jax.jit(lambda rng: stage.init(rng, load)) if name in TRACEABLE_INIT else lambda rng: stage.init(rng, load)
    variables = jax.device_get(init(loop.seed_key(2)))
    frozen = devices.replicate(stage.frozen(load), mesh)
    source = stage.resolve_data(load)
    batches = [devices.shard_batch(source.local_batch(s, 0, 1), mesh) for s in range(NUM_STEPS)]
    return {"name": name, "initial": {m: v["params"] for m, v in variables.items()},
            "bf16": train(stage, variables, frozen, batches, mesh)}


def _float_dtypes(tree) -> set[str]:
    return {str(x.dtype) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)}


def _arrays_that_differ(a, b) -> tuple[int, int]:
    """(how many parameter arrays of two trees of one model differ, how many there are)."""
    differ = jax.tree.leaves(jax.tree.map(lambda x, y: bool(np.any(x != y)), a, b))
    return sum(differ), len(differ)


# --- the tests -----------------------------------------------------------------------------------
def test_main_stage_trains_in_bfloat16(runs):
    """One test per recipe (its run is made once, whatever order the tests run in)."""
    name, run = runs["name"], runs["bf16"]
    # losses float32 as the recipe's step returns them; params, statistics and optimizer state float32
    traced, final = run["traced"], run["final"]
    assert traced["metrics"] == dict.fromkeys(traced["metrics"], "float32"), name
    for part in ("params", "batch_stats", "opt_state"):
        assert _float_dtypes(getattr(traced["state"], part)) <= {"float32"}, f"{name}: {part}"
        assert _float_dtypes(getattr(final, part)) <= {"float32"}, f"{name}: {part}"
    assert _float_dtypes(final.params) == {"float32"}, name
    # finite metrics, and every trained model moves
    assert all(run["finite"]) and len(run["logged"]) == NUM_STEPS, name
    assert all(np.isfinite(v) for metrics in run["logged"] for v in metrics.values()), run["logged"]
    for model, initial in runs["initial"].items():
        moved, total = _arrays_that_differ(initial, final.params[model])
        assert moved >= total / 2, f"{name} {model}: {moved} of {total} parameter arrays changed"
    # every convolution of the traced step (forward, backward, every network) computes in bfloat16
    convs = run["convs"]
    not_bf16 = [dtypes for dtypes in convs if set(dtypes) != {"bfloat16"}]
    assert convs and not not_bf16, f"{name}: {len(not_bf16)} of {len(convs)} convolutions not in bfloat16: " \
                                   f"{sorted(set(not_bf16))}"
