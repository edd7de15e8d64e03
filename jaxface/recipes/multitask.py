"""Multi-task face attributes with a staged curriculum and a decoupling module (seed 000).

One network reads seven attributes (gender, age, smile, image quality, face value, mask, glasses) so the
response time stops growing with the number of tasks. Three stages, each initialised from the previous
one (`merge_params`: earlier parameters are copied, new parts are fresh):
  stage1  shared ResNet + heads of the independent attributes, on set 1 (independent labels only);
  stage2  + heads of the coupled attributes (age, smile, face value), on sets 1 + 2;
  stage3  + the per-task decoupling module (pose-conditioned channel gate + residual branch per head,
          see `jaxface.models.attributes`) and the pose head, on sets 1 + 2 + 3 (large head poses).
Arms, on the eval split: one single-task model per attribute, one multi-task model on everything at once
(joint), the curriculum without decoupling (stage3_plain: stage3 without the module), the full method
(stage3) and the trivial predictor (training majority / mean). Each head's loss averages over the examples
carrying its label (`multi_head_attribute_loss`). Results: accuracy (%) or MAE per attribute, images/s."""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxface.data import face_attributes as fa
from jaxface.data import synthetic_faces as sf
from jaxface.data.face_attributes import HEADS
from jaxface.data.pipeline import ArraySource, ShuffledBatches, SubsetSource, check_dataset_name, ordered_batches
from jaxface.evaluation import plots
from jaxface.evaluation.attributes import (above_trivial, attribute_metric as _metric, caption, describe_attribute,
                                           trivial_outputs)
from jaxface.losses.attributes import multi_head_attribute_loss
from jaxface.models.attributes import MultiTaskAttributeNet, merge_params, network_variables, to_label_units
from jaxface.models.common import COMPUTE_DTYPES
from jaxface.train import checks, devices, loop
from jaxface.train.driver import Claim, Report
from jaxface.train.optimizers import make_optimizer
from jaxface.train.checkpoints import load_exported
from jaxface.train.predict import image_input_format, predict_images as predict_on_images, predict_stages
from jaxface.train.stages import Stage, config_fingerprint

CURRICULUM = {"stage1": sf.INDEPENDENT_ATTRIBUTES,
              "stage2": sf.INDEPENDENT_ATTRIBUTES + sf.COUPLED_ATTRIBUTES,
              "stage3": HEADS}
ARMS = {"single-task (7 models)": None, "multi-task, all at once": "joint",
        "staged, no decoupling": "stage3_plain", "staged + decoupling (full)": "stage3"}
TRIVIAL = "trivial (train majority / mean)"
ARM_LABELS = dict(zip([*ARMS, TRIVIAL], ("single x7", "joint", "staged", "staged+decoupling", "trivial")))  # plots
FINAL_STAGE = "stage3"
EXPORT = (FINAL_STAGE, "net")  # the full method's network, for export and predict


# --- configuration -------------------------------------------------------------------------------
def validate_config(config) -> None:
    """One clear line per problem; called before anything is written."""
    loop.validate_train_config(config, ("single", "joint", "stage1", "stage2", "stage3"))
    check_dataset_name(config.data.name, fa.DATASETS)
    if config.data.name == "synthetic_faces":
        checks.one_of(config.data.builder_config, sf.CONFIGS, "config.data.builder_config")
    checks.in_range(config.data.image_size, 16, 1024, "config.data.image_size")
    for stage in CURRICULUM:
        subsets = tuple(config.data.stage_subsets[stage])
        if not subsets or not set(subsets) <= set(sf.SUBSETS):
            raise ValueError(f"config.data.stage_subsets.{stage}={subsets} must be a non-empty subset of {sf.SUBSETS}")
    if len(config.model.widths) != len(config.model.blocks):
        raise ValueError(f"config.model.widths {tuple(config.model.widths)} and blocks {tuple(config.model.blocks)} "
                         "must have the same length")
    checks.one_of(config.model.compute_dtype, COMPUTE_DTYPES, "config.model.compute_dtype")
    if set(config.loss.weights) != set(HEADS):
        raise ValueError(f"config.loss.weights must name exactly the heads {', '.join(HEADS)}")
    checks.non_negative(config.loss.weights, "config.loss.weights")


def build_net(config, heads, *, decoupling: bool, train: bool) -> MultiTaskAttributeNet:
    """The network with `heads` (names, in `HEADS` order); `train=True` syncs BatchNorm across devices."""
    specs, m = fa.head_specs(config.data.name), config.model
    return MultiTaskAttributeNet(
        heads=tuple((h, specs[h].output_dim) for h in HEADS if h in heads), decoupling=decoupling,
        widths=tuple(m.widths), blocks=tuple(m.blocks), stem_width=m.stem_width, stem_stride=m.stem_stride,
        embed_dim=m.embed_dim, head_hidden=m.head_hidden, decoupling_hidden=m.decoupling_hidden,
        bn_axis_name=devices.batch_norm_axis(train), dtype=jnp.dtype(m.compute_dtype))


# --- data ----------------------------------------------------------------------------------------
def stage_data(config, train: ArraySource, heads, subsets) -> ShuffledBatches:
    """Batches of the examples in `subsets` that carry at least one label of `heads`, as a step reads them."""
    return ShuffledBatches(SubsetSource(train, fa.examples_labelling(train, heads, subsets)), seed=config.seed,
                           global_batch_size=config.train.batch_size,
                           transform=functools.partial(fa.step_batch, heads=tuple(heads)))


# --- per-device step function --------------------------------------------------------------------
def make_step(config, models: dict[str, tuple[tuple[str, ...], bool]]):
    """One optimizer step of every model {name: (heads, decoupling)} of a stage on its masked multi-head loss
    L = sum_h w_h * (sum_i m_hi l_hi / max(sum_i m_hi, 1)), sums over the GLOBAL batch (the objective does not
    depend on the device count). Models share nothing: the gradient of sum_models L is each one's own."""
    nets = {m: build_net(config, heads, decoupling=decoupling, train=True) for m, (heads, decoupling) in models.items()}
    scales = fa.regression_scales(config.data.name)

    def step(state, frozen, batch, rng):
        def loss_fn(params):
            total, stats, metrics = 0.0, {}, {}
            for m, (heads, _) in models.items():
                out, updates = nets[m].apply({"params": params[m], "batch_stats": state.batch_stats[m]},
                                             batch["image"], train=True, mutable=["batch_stats"])
                out = to_label_units(out, scales)
                loss, per_head = multi_head_attribute_loss(
                    out, {h: batch[h] for h in heads}, {h: batch[f"mask_{h}"] for h in heads},
                    {h: config.loss.weights[h] for h in heads},
                    regression_scales={h: scales[h] for h in heads if h in scales}, huber_delta=config.loss.huber_delta,
                    axis_name=devices.AXIS)
                total, stats[m] = total + loss, updates["batch_stats"]
                metrics.update(per_head)  # head names are unique within a stage
            return total, (stats, metrics)

        (loss, (stats, metrics)), grads = devices.value_and_mean_grad(loss_fn, state.params)
        return state.apply_gradients(grads, stats), {"loss": loss, **metrics}

    return step


# --- stages --------------------------------------------------------------------------------------
def stage_models(config) -> dict[str, dict[str, tuple[tuple[str, ...], bool]]]:
    """{stage: {model: (heads, decoupling)}} in training order. The seven single-task models train side by side
    in one stage (one compilation instead of seven); each sees the examples carrying its label (the mask)."""
    available = fa.head_specs(config.data.name)
    labelled = {s: tuple(h for h in heads if h in available) for s, heads in CURRICULUM.items()}
    return {"single_task": {f"single_{h}": ((h,), False) for h in sf.ATTRIBUTES if h in available},
            "joint": {"net": (labelled["stage3"], False)}, "stage1": {"net": (labelled["stage1"], False)},
            "stage2": {"net": (labelled["stage2"], False)}, "stage3_plain": {"net": (labelled["stage3"], False)},
            "stage3": {"net": (labelled["stage3"], True)}}


def largest_network_variables(config, rng) -> dict:
    """Initial variables of the largest network (every head, decoupling) as host arrays."""
    net = build_net(config, tuple(fa.head_specs(config.data.name)), decoupling=True, train=False)
    s = config.data.image_size
    return jax.device_get(jax.jit(functools.partial(net.init, train=False))(rng, jnp.zeros((1, s, s, 3), jnp.uint8)))


PREVIOUS = {"stage2": "stage1", "stage3_plain": "stage2", "stage3": "stage2"}  # the stage each one grows
SHARED_KEYS = ("seed", "data.name", "data.builder_config", "data.train_split", "data.image_size",
               "data.max_train_examples", "data.stage_subsets", "model", "loss", "train.batch_size", "optimizer")


def stage_steps_key(name: str) -> str:
    """The key of config.train.steps that sets stage `name`'s length."""
    return {"single_task": "single", "joint": "joint"}.get(name, name.replace("_plain", ""))


def stage_fingerprint(config, name: str) -> dict:
    """The config values that shape stage `name` (`Stage.fingerprint`), its predecessors' lengths included."""
    chain = [name]
    while chain[-1] in PREVIOUS:
        chain.append(PREVIOUS[chain[-1]])
    return config_fingerprint(config, [*SHARED_KEYS, *(f"train.steps.{stage_steps_key(s)}" for s in chain)])


def load_data(config) -> dict:
    """{'train', 'test'}: both splits in memory at the model's input size (`face_attributes.load_split`)."""
    devices.main_process_first(lambda: fa.prepare(config.data))
    return {"train": fa.load_split(config.data, config.data.train_split, config.data.max_train_examples),
            "test": fa.load_split(config.data, config.data.eval_split, config.data.max_eval_examples)}


def make_stages(config, data: dict) -> list[Stage]:
    train, steps, subsets = data["train"], config.train.steps, config.data.stage_subsets
    # Every model starts from the same backbone weights: a controlled comparison.
    base_key = jax.random.fold_in(loop.seed_key(config.seed), 1)
    initial: dict = {}  # the largest network's initial variables, made on first use
    stages = []
    for name, models in stage_models(config).items():
        # the single-task and joint arms read the curriculum's final data (every subset)
        curriculum = name.replace("_plain", "") if name.startswith("stage") else "stage3"
        num_steps = steps[stage_steps_key(name)]

        def init(rng, load, name=name, models=models):
            if "full" not in initial:
                initial["full"] = largest_network_variables(config, base_key)
            out = {m: network_variables(initial["full"], *spec) for m, spec in models.items()}
            if name in PREVIOUS:
                # Grow the previous stage's network: its parameters and statistics carry over unchanged.
                out = {m: merge_params(v, load(PREVIOUS[name])[m]) for m, v in out.items()}
            return out

        heads = tuple(dict.fromkeys(h for hs, _ in models.values() for h in hs))
        stages.append(Stage(
            name=name, init=init, optimizers=dict.fromkeys(models, make_optimizer(config.optimizer, num_steps)),
            step=make_step(config, models), num_steps=num_steps, fingerprint=stage_fingerprint(config, name),
            data=stage_data(config, train, heads, tuple(subsets[curriculum]))))
    return stages


# --- evaluation ----------------------------------------------------------------------------------
def predict_fn(config, heads, decoupling: bool):
    net, scales = build_net(config, heads, decoupling=decoupling, train=False), fa.regression_scales(config.data.name)
    return lambda variables, batch: to_label_units(net.apply(variables, batch["image"], train=False), scales)


def attribute_metric(config, head: str, outputs: np.ndarray, labels: np.ndarray, known: np.ndarray) -> float:
    """Accuracy in % or MAE in label units over the examples whose label is known (`attribute_metric`)."""
    return _metric(fa.head_specs(config.data.name)[head].kind, outputs, labels, known)


def metric_column(config, head: str) -> str:
    return f"{head} {'acc %' if fa.head_specs(config.data.name)[head].kind == 'classification' else 'MAE'}"


def evaluate(config, store, data: dict, mesh, out_dir: str) -> Report:
    """Every arm on the eval split (the seven single-task models, each multi-task arm; timed), the trivial
    predictor, and the claims: the full method reads all attributes faster than the single-task models
    without losing accuracy, and each of its heads beats the trivial predictor (decoupling: `CLAIMS`)."""
    test, available = data["test"], list(fa.head_specs(config.data.name))
    first, _ = next(ordered_batches(test, config.eval.batch_size))
    heads_of = {model if stage == "single_task" else stage: (stage, model, heads, decoupling)
                for stage, models in stage_models(config).items() if stage in [*ARMS.values(), "single_task"]
                for model, (heads, decoupling) in models.items()}
    found = predict_stages(store, {k: (s, m, predict_fn(config, h, d)) for k, (s, m, h, d) in heads_of.items()}, test,
                           mesh, config.eval.batch_size, transform=lambda b: {"image": b["image"]},
                           timed_batch={"image": first["image"]})

    def scores(outputs):  # {head: outputs on the eval split} -> {metric column: figure}
        return {metric_column(config, h): attribute_metric(config, h, o, test.arrays[h],
                                                           test.arrays["known"][:, HEADS.index(h)])
                for h, o in outputs.items()}

    rows = []
    for arm, stage in ARMS.items():
        keys = [k for k in heads_of if k.startswith("single_")] if stage is None else [stage]
        rows.append({"arm": arm, "models": len(keys), "params": sum(found[k]["params"] for k in keys),
                     **scores({h: found[k]["outputs"][h] for k in keys for h in heads_of[k][2]}),
                     "images/s": 1.0 / sum(1.0 / found[k]["images/s"] for k in keys)})  # models run in turn
    train, specs = data["train"].arrays, fa.head_specs(config.data.name)  # trivial: fitted on training labels
    trivial = {"arm": TRIVIAL, **scores({h: trivial_outputs(s.kind, train[h], train["train_mask"][:, HEADS.index(h)],
                                                            len(test), s.num_classes) for h, s in specs.items()})}
    if jax.process_index() == 0:
        _plots(config, out_dir, rows + [trivial], test, found[FINAL_STAGE]["outputs"], available)
    columns = ["arm", "models", "params"] + [metric_column(config, h) for h in available] + ["images/s"]
    single, full = rows[0], rows[-1]  # `ARMS` order: single-task first, the full method last
    gaps = {c: full[c] - single[c] for c in columns[3:-1] if c in single and c in full}
    accuracy_gaps, mae_gaps = ({c: g for c, g in gaps.items() if c.endswith("acc %") == acc} for acc in (True, False))
    speedup = full["images/s"] / single["images/s"]
    learned = {h: above_trivial(specs[h].kind, full[c], trivial[c]) for h, c in zip(available, columns[3:-1])}
    summary = {"speedup_vs_single_task": speedup, "gap_full_minus_single": gaps,
               "all_accuracies_within_1_point": bool(all(g >= -1.0 for g in accuracy_gaps.values())),
               "full_heads_above_trivial": learned, "every_full_head_above_trivial": all(learned.values())}
    notes = [f"Seed 000 claim: one model reads all attributes faster than one model per attribute without losing "
             f"accuracy. Full method vs single-task: {speedup:.2f}x images/s; accuracy gaps (points, full - single): "
             + ", ".join(f"{c.split()[0]} {g:+.2f}" for c, g in accuracy_gaps.items()) + "; MAE gaps (full - single, "
             "lower is better): " + ", ".join(f"{c.split()[0]} {g:+.2f}" for c, g in mae_gaps.items()) + ".",
             "Full method above the trivial predictor (last row; accuracy >= trivial + 10 points, MAE <= 0.8 x "
             "trivial): " + ", ".join(f"{h} {'yes' if ok else 'NO'}" for h, ok in learned.items()) + ".",
             f"images/s: jitted inference of all attributes at batch {config.eval.batch_size} on "
             f"{devices.describe(mesh)}; the single-task arm runs its models one after another. "
             f"`experiments/bench_multitask.py` measures batch 1 and 64."]
    size = config.data.image_size
    return Report(title=f"Multi-task face attributes on {config.data.name} ({size}x{size}, {config.data.eval_split} "
                  "split)", columns=columns, rows=rows + [trivial], summary=summary, notes=notes)


def CLAIMS(config):  # the decoupling ablation on each coupled attribute, judged by the core over seeds
    columns = {h: metric_column(config, h) for h in sf.COUPLED_ATTRIBUTES if h in fa.head_specs(config.data.name)}
    return tuple(Claim("staged + decoupling (full)", "staged, no decoupling", c, f"decoupling improves {h} (coupled)",
                       higher_is_better=c.endswith("%")) for h, c in columns.items())


def describe_prediction(config, head: str, output: np.ndarray) -> object:
    """One head's output of one image -> a readable value (`describe_attribute`)."""
    kind, names = fa.head_specs(config.data.name)[head].kind, fa.class_names(config.data.name, head)
    return describe_attribute(kind, head, output, names)


def _plots(config, out_dir: str, rows: list, test: ArraySource, final_outputs: dict, heads: list) -> None:
    """Per-attribute charts and sample faces, as PNGs in `out_dir`."""
    for kind, name, ylabel in (("classification", "accuracy", f"{config.data.eval_split} accuracy (%)"),
                               ("regression", "mae", f"{config.data.eval_split} MAE (label units)")):
        columns = [metric_column(config, h) for h in heads if fa.head_specs(config.data.name)[h].kind == kind]
        groups = {ARM_LABELS[r["arm"]]: {c.split()[0]: r[c] for c in columns if c in r} for r in rows}
        if any(groups.values()):
            plots.save_bar_chart(os.path.join(out_dir, f"attributes_{name}.png"), groups,
                                 title=f"per-attribute {name} by arm", ylabel=ylabel)
    count = min(config.eval.num_sample_faces, len(test))
    captions = [caption({h: describe_prediction(config, h, v[i]) for h, v in final_outputs.items()})
                for i in range(count)]
    plots.save_captioned_grid(os.path.join(out_dir, "sample_faces.png"), test.arrays["image"][:count], captions,
                              max_images=count, title=f"{config.data.eval_split} faces: full method's predictions")


# --- inference on image files (experiments/predict.py) ------------------------------------------
def input_format(config) -> dict:
    return image_input_format(config.data.image_size)


def predict_images(config, workdir: str, images: list[np.ndarray]) -> list[dict]:
    """Attributes of each RGB uint8 image [H, W, 3] (any size: centre-cropped square, then resized) from
    the final stage's exported network: [{head: value}] (see `describe_prediction`)."""
    variables = load_exported(workdir, FINAL_STAGE, ["net"])["net"]
    heads, decoupling = stage_models(config)[FINAL_STAGE]["net"]
    found = predict_on_images(predict_fn(config, heads, decoupling), variables, images, config.data.image_size)
    return [{h: describe_prediction(config, h, out[h]) for h in heads} for out, _ in found]
