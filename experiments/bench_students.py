r"""Benchmark (d): every distilled student against its teachers at inference, speed and quality side by side.

  python -m experiments.bench_students --config=configs/distill.py --workdir=runs/distill
  python -m experiments.bench_students --config=configs/semi_distill.py --workdir=runs/semi
  python -m experiments.bench_students --config=configs/distill.py:lr128          # timings only (accelerator)

For each network of a distilled recipe (distill: the student, teacher_big, teacher_hr; semi_distill: the
student and the teacher) times the predict function the recipe's evaluation uses (distill: heads and
CenterNet decoding; semi_distill: softmax and arg-max) at batch 1 and 64 on one device: compilation
excluded, inputs already on the device, every call synchronised, the median over at least 5 calls and
`--seconds`. Prints params, input size, latency, images/s and the speed-up of the student over each
teacher; then, from the finished run's results.json, each stage's metric (distill mAP@0.5, semi_distill
test accuracy; the mean ± std over the seeds of a several-seed run) beside the speed of its network.
Timings use freshly initialised weights of the config's networks (speed does not depend on their values);
`--workdir` must be a run of the same networks (checked against its config.json).
"""

import dataclasses
import json
import os
import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from experiments.timing import median_call_seconds

_CONFIG = config_flags.DEFINE_config_file("config", "configs/distill.py", "Config file, optionally `path.py:variant`.")
_WORKDIR = flags.DEFINE_string("workdir", None, "A finished run of the same config, for each network's metric.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "64"], "Batch sizes to time.")
_SECONDS = flags.DEFINE_float("seconds", 3.0, "Minimum timed seconds per measurement.")


@dataclasses.dataclass(frozen=True)
class Network:
    """One network as its recipe predicts with it: predict(variables, {input_key: uint8 [B, size, size, 3]})."""

    name: str
    predict: Callable
    variables: Any
    input_key: str
    size: int


@dataclasses.dataclass(frozen=True)
class DistilledRecipe:
    """What the benchmark needs of a distilled recipe.

    networks: (config, rng) -> [Network], the student first; metric: the results.json column to show;
    row_network: a results row -> the network it evaluated (None: a row of no network); row_name: a row's
    label; network_keys: the config keys that shape the networks and their inputs (compared with the run's).
    """

    networks: Callable
    metric: str
    row_network: Callable
    row_name: Callable
    network_keys: tuple


def _initialised(module, key, size: int) -> dict:
    """Fresh variables of a linen module reading uint8 images [B, size, size, 3] (host arrays)."""
    init = jax.jit(lambda rng: module.init(rng, jnp.zeros((1, size, size, 3), jnp.uint8), train=False))
    return jax.device_get(init(key))


def distill_networks(config, rng) -> list[Network]:
    from jaxface.recipes import distill

    student_size = distill.input_format(config)["image"]["shape"][0]
    networks = []
    for i, name in enumerate(("student", "teacher_big", "teacher_hr")):
        key = distill.IMAGE_KEY[name]
        size = student_size * config.data.resolution_factor if key == "image_hr" else student_size
        variables = _initialised(distill.build_detector(config, name, train=False), jax.random.fold_in(rng, i), size)
        networks.append(Network(name, distill.predict_fn(config, name), variables, key, size))
    return networks


def semi_distill_networks(config, rng) -> list[Network]:
    from jaxface.recipes import semi_distill

    size = config.data.crop_size
    return [Network(name, semi_distill.make_predict(config, name),
                    _initialised(semi_distill.build(config, name, train=False), jax.random.fold_in(rng, i), size),
                    "image", size) for i, name in enumerate(("student", "teacher"))]


def semi_distill_row_network(row: dict) -> str | None:
    """'student', 'teacher (chosen)' -> the network; None where seeds chose differently ('student (chosen) /
    teacher (chosen)' in a several-seed table)."""
    chosen = {part.split(" ")[0] for part in str(row.get("model", "")).split(" / ")}
    return chosen.pop() if len(chosen) == 1 else None


DISTILLED = {
    "distill": DistilledRecipe(
        distill_networks, "mAP@0.5", row_network=lambda row: row.get("model"), row_name=lambda row: row["stage"],
        network_keys=("models", "data.builder_config", "data.resolution_factor", "eval.top_k")),
    "semi_distill": DistilledRecipe(
        semi_distill_networks, "test acc", row_network=semi_distill_row_network,
        row_name=lambda row: f"{row['labels']}: {row['stage']}",
        network_keys=("models", "data.name", "data.crop_size")),
}


def fail(message: str):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


# --- timing --------------------------------------------------------------------------------------
def latency(network: Network, batch_size: int, device, seconds: float) -> float:
    """Median seconds per call of the network's jitted predict function on a batch already on `device`."""
    images = np.random.default_rng(0).integers(0, 256, (batch_size, network.size, network.size, 3), np.uint8)
    batch = jax.device_put({network.input_key: images}, device)
    variables = jax.device_put(network.variables, device)
    predict = jax.jit(network.predict)

    def run():
        jax.block_until_ready(predict(variables, batch))

    run()  # compile
    return median_call_seconds(run, seconds)


# --- the finished run ----------------------------------------------------------------------------
def check_same_networks(config, workdir: str, keys: tuple) -> None:
    """The run in `workdir` trained the networks `config` describes (its config.json), else one error line."""
    from jaxface.train.checkpoints import fingerprint_changes
    from jaxface.train.stages import config_fingerprint

    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        fail(f"{path} not found: --workdir must be a finished run of experiments.run")
    with open(path) as f:
        run_config = json.load(f)
    if run_config.get("recipe") != config.recipe:
        fail(f"{workdir} is a run of {run_config.get('recipe')!r}, not of {config.recipe!r}")
    changed = fingerprint_changes(config_fingerprint(run_config, keys), config_fingerprint(config, keys))
    if changed:
        fail(f"--config's networks differ from the run's ({path}) in {', '.join(changed)}: pass the config file "
             f"and variant the run used")


def metric_rows(workdir: str, metric: str) -> tuple[list[dict], list[dict | None], str]:
    """(results rows, per row {'mean', 'std'} of `metric` over seeds or None for one seed, where from)."""
    path = os.path.join(workdir, "results.json")
    if not os.path.isfile(path):
        fail(f"{path} not found: --workdir must be a finished run of experiments.run")
    with open(path) as f:
        results = json.load(f)
    if metric not in results.get("columns", []):
        fail(f"{path} has no column {metric!r} (columns: {', '.join(results.get('columns', []))})")
    rows, over_seeds = results["rows"], results.get("over_seeds")
    if over_seeds is None:
        return rows, [None] * len(rows), path
    # A run of several seeds shows "mean ± std" in its rows; over_seeds holds the figures, one entry per row
    # in the rows' order (a value identical in every seed, e.g. a shared teacher's, stays a number in its row).
    if len(over_seeds) != len(rows):
        fail(f"{path}: over_seeds has {len(over_seeds)} entries for {len(rows)} rows")
    spread = [stats.get(metric) for stats in over_seeds.values()]
    return rows, spread, f"{path}, {len(results.get('seeds', []))} seeds"


def metric_text(row: dict, spread: dict | None, metric: str) -> str:
    if spread is not None:
        return f"{spread['mean']:.4f} ± {spread['std']:.4f}"
    value = row[metric]
    return f"{value:.4f}" if isinstance(value, (int, float)) else str(value)


# --- the report ----------------------------------------------------------------------------------
def print_timings(networks: list[Network], seconds_per_call: dict, batch_sizes: list[int]) -> None:
    """One line per (batch size, network); a teacher's line ends with the student's speed-up over it."""
    from jaxface.models.common import param_count

    student = networks[0].name
    print(f"{'batch':>5}  {'network':12s} {'params':>10}  {'input':>8}  {'latency ms':>10}  {'images/s':>10}  "
          f"{student} speed-up")
    for b in batch_sizes:
        for n in networks:
            s = seconds_per_call[n.name, b]
            speedup = "-" if n.name == student else f"{s / seconds_per_call[student, b]:.2f}x"
            print(f"{b:5d}  {n.name:12s} {param_count(n.variables['params']):10,d}  {f'{n.size}x{n.size}':>8}  "
                  f"{s * 1e3:10.3f}  {b / s:10.1f}  {speedup}")


def print_side_by_side(spec: DistilledRecipe, workdir: str, seconds_per_call: dict, batch_sizes: list[int]) -> None:
    """Each results row: its metric beside the images/s of the network it evaluated, at every batch size."""
    rows, spread, where = metric_rows(workdir, spec.metric)
    names, models = [spec.row_name(r) for r in rows], [str(r.get("model", "")) for r in rows]
    width, model_width = max(map(len, names)) + 2, max(map(len, models)) + 2
    print(f"{spec.metric} from {where}, beside the speed of each row's network:")
    print(f"  {'row':{width}s}{'model':{model_width}s}{spec.metric:>17s}   images/s at batch "
          + " / ".join(map(str, batch_sizes)))
    for name, model, row, s in zip(names, models, rows, spread):
        network = spec.row_network(row)
        if network is None:
            rates = "- (the seeds chose different networks)"
        elif (network, batch_sizes[0]) in seconds_per_call:
            rates = " / ".join(f"{b / seconds_per_call[network, b]:.1f}" for b in batch_sizes)
        else:
            continue  # a row of no network benchmarked here
        print(f"  {name:{width}s}{model:{model_width}s}{metric_text(row, s, spec.metric):>17s}   {rates}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from jaxface.train.loop import seed_key

    config = _CONFIG.value
    if config.recipe not in DISTILLED:
        fail(f"config.recipe={config.recipe!r} is not a distilled recipe; allowed: {', '.join(DISTILLED)}")
    spec = DISTILLED[config.recipe]
    if _WORKDIR.value:
        check_same_networks(config, _WORKDIR.value, spec.network_keys)
    networks = spec.networks(config, seed_key(config.seed))
    device, batch_sizes = jax.devices()[0], [int(b) for b in _BATCH_SIZES.value]
    print(f"device: {device.device_kind} ({device.platform}), one device; JAX {jax.__version__}; "
          f"compute {config.models.compute_dtype}; median of >= 5 calls and >= {_SECONDS.value:g} s; fresh weights")
    seconds_per_call = {(n.name, b): latency(n, b, device, _SECONDS.value) for b in batch_sizes for n in networks}
    print_timings(networks, seconds_per_call, batch_sizes)
    if _WORKDIR.value:
        print_side_by_side(spec, _WORKDIR.value, seconds_per_call, batch_sizes)
    else:
        print("metric: no run given (--workdir=<a finished run of this config> shows each network's "
              f"{spec.metric})")


if __name__ == "__main__":
    app.run(main)
