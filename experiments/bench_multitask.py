r"""Inference benchmark of seed 000's claim: one multi-task model (all heads) against the seven
single-task models run one after another, at batch 1 and batch 64, on one device.

  python -m experiments.bench_multitask --config=configs/multitask.py --results=runs/mt/results.json

Prints latency (median ms per call) and throughput (images/s) of each, their ratio (the seed's
target: >= 6x at batch 64), and, from the results.json of a finished run, each attribute's gap to its
single-task model (target: within 1 accuracy point). Timings use freshly initialised weights of the
config's architecture (the speed does not depend on their values); compilation is excluded, inputs are
already on the device and every call is synchronised.
"""

import json

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from experiments.timing import median_call_seconds

_CONFIG = config_flags.DEFINE_config_file("config", "configs/multitask.py", "Config file, optionally `path.py:variant`.")
_RESULTS = flags.DEFINE_string("results", None, "results.json of a finished run, for the accuracy gaps.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "64"], "Batch sizes to time.")
_SECONDS = flags.DEFINE_float("seconds", 3.0, "Minimum timed seconds per measurement.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    import jax

    from jaxface.models.common import param_count
    from jaxface.recipes import multitask
    from jaxface.train.loop import seed_key

    config = _CONFIG.value
    multitask.validate_config(config)
    full = multitask.largest_network_variables(config, seed_key(config.seed))
    models = multitask.stage_models(config)
    arms = {"multi-task (full, all heads)": [models["stage3"]["net"]],
            "single-task x%d (one after another)" % len(models["single_task"]): list(models["single_task"].values())}
    size = config.data.image_size
    print(f"device: {jax.devices()[0].device_kind} ({jax.devices()[0].platform}); input {size}x{size}; "
          f"JAX {jax.__version__}")
    table = {}
    for batch_size in [int(b) for b in _BATCH_SIZES.value]:
        images = jax.device_put(np.random.default_rng(0).integers(0, 256, (batch_size, size, size, 3), np.uint8))
        for arm, nets in arms.items():
            fns, params = [], 0
            for heads, decoupling in nets:
                variables = jax.device_put(multitask.network_variables(full, heads, decoupling))
                params += param_count(variables["params"])
                fn = jax.jit(multitask.predict_fn(config, heads, decoupling))
                fns.append((fn, variables))

            def run():
                jax.block_until_ready([fn(v, {"image": images}) for fn, v in fns])

            run()  # compile
            seconds = median_call_seconds(run, _SECONDS.value)
            table[(arm, batch_size)] = seconds
            print(f"batch {batch_size:3d} | {arm:38s} | {len(nets)} model(s), {params:,} params | "
                  f"{seconds * 1e3:8.2f} ms | {batch_size / seconds:9.1f} images/s")
    single_arm = next(a for a in arms if a.startswith("single"))
    multi_arm = next(a for a in arms if a.startswith("multi"))
    for batch_size in [int(b) for b in _BATCH_SIZES.value]:
        ratio = table[(single_arm, batch_size)] / table[(multi_arm, batch_size)]
        print(f"batch {batch_size:3d}: multi-task is {ratio:.2f}x the throughput of the single-task models"
              + (f" (seed's target >= 6x: {'met' if ratio >= 6 else 'NOT met'})" if batch_size == 64 else ""))
    if _RESULTS.value:
        with open(_RESULTS.value) as f:
            results = json.load(f)
        # A run of several seeds (config.num_seeds) shows "mean ± std" in its rows: read the means.
        means = {arm: {c: v["mean"] for c, v in columns.items()} for arm, columns in results.get("over_seeds", {}).items()}
        rows = {r["arm"]: {**r, **means.get(r["arm"], {})} for r in results["rows"]}
        single, full_row = rows["single-task (7 models)"], rows["staged + decoupling (full)"]
        print(f"accuracy / MAE of the full method vs its single-task model ({_RESULTS.value}):")
        for column in results["columns"][3:-1]:
            if not all(isinstance(r.get(column), (int, float)) for r in (single, full_row)):
                continue  # not measured for one of them (no single-task pose model)
            gap = full_row[column] - single[column]
            if column.endswith("acc %"):
                verdict = "not more than 1 point below" if gap >= -1.0 else "MORE than 1 point below"
                print(f"  {column:16s} single {single[column]:7.2f}  full {full_row[column]:7.2f}  "
                      f"gap {gap:+6.2f} points ({verdict})")
            else:
                print(f"  {column:16s} single {single[column]:7.2f}  full {full_row[column]:7.2f}  "
                      f"gap {gap:+6.2f} (lower MAE is better)")


if __name__ == "__main__":
    app.run(main)
