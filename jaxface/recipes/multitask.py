"""Multi-task face attributes with a staged curriculum and a decoupling module (seed 000).

One network reads seven attributes (gender, age, smile, image quality, face value, mask, glasses) so
the response time stops growing with the number of tasks. It is trained in three stages, each
initialised from the previous one (`merge_params`: earlier parameters are copied, new parts are fresh):
  stage1  shared ResNet + heads of the independent attributes, on set 1 (independent labels only);
  stage2  + heads of the coupled attributes (age, smile, face value), on sets 1 + 2;
  stage3  + the per-task decoupling module (pose-conditioned channel gate + residual branch per head,
          see `jaxface.models.attributes`) and the pose head, on sets 1 + 2 + 3 (large head poses).
Arms compared on the test split (unseen identities): one single-task model per attribute, one
multi-task model trained on everything at once (joint), the curriculum without decoupling
(stage3_plain: stage3's data and pose head, no decoupling module) and the full method (stage3).
Every head's loss is averaged over the examples carrying its label (`multi_head_attribute_loss`).
Results: accuracy (%) or MAE per attribute and arm, and images/s of each arm reading all attributes.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxface.data import synthetic_faces as sf
from jaxface.data.celeb_a import (CELEB_A_CLASS_NAMES, CELEB_A_LABELS, CELEB_A_MISSING, celeb_a_to_canonical,
                                  open_celeb_a)
from jaxface.data.images import resize_images
from jaxface.data.pipeline import ArraySource, ShuffledBatches, check_dataset_name, ordered_batches, resolve_data_dir
from jaxface.losses.attributes import multi_head_attribute_loss
from jaxface.models.attributes import MultiTaskAttributeNet, merge_params
from jaxface.models.common import param_count
from jaxface.train import devices, loop, writers
from jaxface.train.driver import Report
from jaxface.train.optimizers import make_optimizer
from jaxface.train.checkpoints import load_exported
from jaxface.train.predict import Predictor
from jaxface.train.stages import Stage, config_fingerprint

HEADS = sf.ATTRIBUTES + ("pose",)  # label column order of `train_mask` / `known`
CURRICULUM = {"stage1": sf.INDEPENDENT_ATTRIBUTES,
              "stage2": sf.INDEPENDENT_ATTRIBUTES + sf.COUPLED_ATTRIBUTES,
              "stage3": HEADS}
ARMS = {"single-task (7 models)": None, "multi-task, all at once": "joint",
        "staged, no decoupling": "stage3_plain", "staged + decoupling (full)": "stage3"}
ARM_LABELS = dict(zip(ARMS, ("single x7", "joint", "staged", "staged+decoupling")))  # short, for plots
FINAL_STAGE = "stage3"
EXPORT = (FINAL_STAGE, "net")  # the full method's network, for export and predict
CLASS_NAMES = {"gender": ("female", "male"), "smile": ("neutral", "smiling"), "quality": sf.QUALITY_NAMES,
               "mask": ("no", "yes"), "glasses": ("no", "yes")}

DATASETS = ("synthetic_faces", "celeb_a")


# --- configuration -------------------------------------------------------------------------------
def head_specs(config) -> dict[str, sf.AttributeSpec]:
    """Every head the data set labels: {name: spec} in `HEADS` order."""
    specs = {**sf.ATTRIBUTE_SPECS, "pose": sf.POSE_SPEC}
    if config.data.name == "celeb_a":
        binary = sf.AttributeSpec("classification", num_classes=2)
        specs.update(age=binary, face_value=binary)
        return {h: s for h, s in specs.items() if h not in CELEB_A_MISSING}
    return specs


def class_names(config, head: str) -> tuple[str, ...]:
    names = CELEB_A_CLASS_NAMES if config.data.name == "celeb_a" else {}
    return names.get(head, CLASS_NAMES.get(head, ()))


def validate_config(config) -> None:
    """One clear line per problem; called before anything is written."""
    loop.validate_train_config(config, ("single", "joint", "stage1", "stage2", "stage3"))
    check_dataset_name(config.data.name, tuple(DATASETS))
    if config.data.name == "synthetic_faces" and config.data.builder_config not in sf.CONFIGS:
        raise ValueError(f"config.data.builder_config={config.data.builder_config!r}; allowed: "
                         f"{', '.join(sf.CONFIGS)}")
    if not 16 <= config.data.image_size <= 1024:
        raise ValueError(f"config.data.image_size={config.data.image_size} must be in [16, 1024]")
    for stage in CURRICULUM:
        subsets = tuple(config.data.stage_subsets[stage])
        if not subsets or not set(subsets) <= set(sf.SUBSETS):
            raise ValueError(f"config.data.stage_subsets.{stage}={subsets} must be a non-empty subset of {sf.SUBSETS}")
    if len(config.model.widths) != len(config.model.blocks):
        raise ValueError(f"config.model.widths {tuple(config.model.widths)} and blocks {tuple(config.model.blocks)} "
                         f"must have the same length")
    if config.model.compute_dtype not in ("float32", "bfloat16"):
        raise ValueError(f"config.model.compute_dtype={config.model.compute_dtype!r}; allowed: float32, bfloat16")
    if set(config.loss.weights) != set(HEADS):
        raise ValueError(f"config.loss.weights must name exactly the heads {', '.join(HEADS)}")
    for head, weight in config.loss.weights.items():
        if weight < 0:
            raise ValueError(f"config.loss.weights.{head}={weight} must be >= 0")


def build_net(config, heads, *, decoupling: bool, train: bool) -> MultiTaskAttributeNet:
    """The network with `heads` (names, in `HEADS` order); `train=True` syncs BatchNorm across devices."""
    specs = head_specs(config)
    m = config.model
    return MultiTaskAttributeNet(
        heads=tuple((h, specs[h].output_dim) for h in HEADS if h in heads), decoupling=decoupling,
        widths=tuple(m.widths), blocks=tuple(m.blocks), stem_width=m.stem_width, stem_stride=m.stem_stride,
        embed_dim=m.embed_dim, head_hidden=m.head_hidden, decoupling_hidden=m.decoupling_hidden,
        bn_axis_name=devices.AXIS if train else None, dtype=jnp.dtype(m.compute_dtype))


# --- data ----------------------------------------------------------------------------------------
class SubsetSource(ArraySource):
    """The examples `indices` of an `ArraySource`, without copying its arrays."""

    def __init__(self, base: ArraySource, indices: np.ndarray):
        self.arrays, self._base, self._indices, self._n = base.arrays, base, np.asarray(indices), len(indices)

    def gather(self, indices: np.ndarray) -> dict:
        return self._base.gather(self._indices[indices])


def synthetic_to_canonical(examples: dict, image_size: int) -> dict:
    """Stacked `synthetic_faces` features -> the recipe's arrays (see `load_split`)."""
    n = len(examples["image"])
    train_mask = np.concatenate([examples["label_mask"], examples["pose_mask"][:, None]], axis=1)
    out = {"image": resize_images(examples["image"], image_size), "subset": examples["subset"].astype(np.int32),
           "train_mask": train_mask.astype(np.float32), "known": np.ones((n, len(HEADS)), np.float32)}
    out.update({h: examples[h] for h in HEADS})
    return out


def load_split(config, split: str, limit: int = -1) -> ArraySource:
    """A whole split in memory at `config.data.image_size`: {'image' [N, S, S, 3] uint8, one label array
    per head of `HEADS` (int32 [N], float32 [N] or pose float32 [N, 3]), 'subset' int32 [N], 'train_mask'
    float32 [N, 8] (labels a training step may use), 'known' float32 [N, 8] (labels that exist, for
    evaluation)}. Read in chunks so only one chunk is held at full resolution."""
    data_dir = resolve_data_dir(config.data.data_dir)
    if config.data.name == "celeb_a":
        source = open_celeb_a(split, data_dir)
        convert = functools.partial(celeb_a_to_canonical, heads=HEADS)
    else:
        devices.main_process_first(lambda: sf.prepare(config.data.builder_config, data_dir))
        source = sf.data_source(config.data.builder_config, split, data_dir)
        convert = lambda rows, size: synthetic_to_canonical(  # noqa: E731
            {k: np.stack([r[k] for r in rows]) for k in rows[0]}, size)

    def read(indices: np.ndarray) -> list[dict]:
        if hasattr(source, "__getitems__"):
            return source.__getitems__(indices.tolist())
        return [source[int(i)] for i in indices]

    n = len(source) if limit < 0 else min(limit, len(source))
    chunks = [convert(read(np.arange(s, min(s + 512, n))), config.data.image_size) for s in range(0, n, 512)]
    return ArraySource({k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]})


def _stage_batch(batch: dict, heads: tuple[str, ...]) -> dict:
    """Source batch -> what a step reads: image, the labels of `heads` and their masks 'mask_<head>'."""
    out = {"image": batch["image"]}
    for h in heads:
        out[h] = batch[h]
        out[f"mask_{h}"] = batch["train_mask"][:, HEADS.index(h)]
    return out


def stage_data(config, train: ArraySource, heads, subsets) -> ShuffledBatches:
    """Batches of the examples in `subsets` that carry at least one label of `heads`."""
    columns = [HEADS.index(h) for h in heads]
    keep = np.isin(train.arrays["subset"], subsets) & (train.arrays["train_mask"][:, columns].max(axis=1) > 0)
    if not keep.any():
        raise ValueError(f"no training example of subsets {tuple(subsets)} labels any of {heads}")
    return ShuffledBatches(SubsetSource(train, np.flatnonzero(keep)), global_batch_size=config.train.batch_size,
                           seed=config.seed, transform=functools.partial(_stage_batch, heads=tuple(heads)))


# --- per-device step function --------------------------------------------------------------------
def make_step(config, models: dict[str, tuple[tuple[str, ...], bool]]):
    """One optimizer step of every model {name: (heads, decoupling)} of a stage on its masked multi-head
    loss L = sum_h w_h * (sum_i m_hi l_hi / max(sum_i m_hi, 1)), the sums over the GLOBAL batch (so the
    objective does not depend on the device count), gradients averaged over devices. Models share nothing, so the gradient of sum_models L is each model's own gradient."""
    nets = {m: build_net(config, heads, decoupling=decoupling, train=True) for m, (heads, decoupling) in models.items()}
    scales = regression_scales(config)

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
    """{stage: {model: (heads, decoupling)}} in training order. The seven single-task models train side
    by side in one stage (independent parameters, one compilation instead of seven); each sees the
    examples carrying its label (the mask), like the multi-task arms."""
    available = head_specs(config)
    everything = tuple(h for h in HEADS if h in available)
    return {
        "single_task": {f"single_{h}": ((h,), False) for h in sf.ATTRIBUTES if h in available},
        "joint": {"net": (everything, False)},
        "stage1": {"net": (tuple(h for h in CURRICULUM["stage1"] if h in available), False)},
        "stage2": {"net": (tuple(h for h in CURRICULUM["stage2"] if h in available), False)},
        "stage3_plain": {"net": (everything, False)},
        "stage3": {"net": (everything, True)},
    }


def largest_network_variables(config, rng) -> dict:
    """Initial variables of the largest network (every head, decoupling) as host arrays."""
    size = config.data.image_size
    net = build_net(config, tuple(head_specs(config)), decoupling=True, train=False)
    init = jax.jit(functools.partial(net.init, train=False))
    return jax.device_get(init(rng, jnp.zeros((1, size, size, 3), jnp.uint8)))


def network_variables(full: dict, heads, decoupling: bool) -> dict:
    """The variables of a network with `heads` cut out of the largest one: parameter names do not depend
    on which heads exist (`MultiTaskAttributeNet`), so every model starts from the same weights and
    initialising compiles once rather than once per model."""
    keep = {"backbone", "neck"} | {f"head_{h}" for h in heads}
    if decoupling:
        keep |= {f"decouple_{h}" for h in heads if h != "pose"}
    return {collection: {k: v for k, v in tree.items() if k in keep} for collection, tree in full.items()}


PREVIOUS = {"stage2": "stage1", "stage3_plain": "stage2", "stage3": "stage2"}  # the stage each one grows
SHARED_KEYS = ("seed", "data.name", "data.builder_config", "data.train_split", "data.image_size",
               "data.max_train_examples", "data.stage_subsets", "model", "loss", "train.batch_size",
               "optimizer")


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
    """{'train', 'test'}: both splits in memory at the model's input size (see `load_split`)."""
    return {"train": load_split(config, config.data.train_split, config.data.max_train_examples),
            "test": load_split(config, config.data.eval_split, config.data.max_eval_examples)}


def make_stages(config, data: dict) -> list[Stage]:
    train = data["train"]
    steps, subsets = config.train.steps, config.data.stage_subsets
    # Every model starts from the same backbone weights: a controlled comparison.
    base_key = jax.random.fold_in(loop.seed_key(config.seed), 1)
    previous = PREVIOUS
    initial: dict = {}  # the largest network's initial variables, made on first use
    stages = []
    for name, models in stage_models(config).items():
        # the single-task and joint arms read the curriculum's final data (every subset)
        curriculum = name.replace("_plain", "") if name.startswith("stage") else "stage3"
        num_steps = steps[stage_steps_key(name)]

        def init(rng, load, name=name, models=models):
            if "full" not in initial:
                initial["full"] = largest_network_variables(config, base_key)
            out = {m: network_variables(initial["full"], heads, decoupling) for m, (heads, decoupling) in models.items()}
            if name in previous:
                # Grow the previous stage's network: its parameters and statistics carry over unchanged.
                out = {m: merge_params(v, load(previous[name])[m]) for m, v in out.items()}
            return out

        heads = tuple(dict.fromkeys(h for hs, _ in models.values() for h in hs))
        stages.append(Stage(
            name=name, init=init, optimizers=dict.fromkeys(models, make_optimizer(config.optimizer, num_steps)),
            step=make_step(config, models), num_steps=num_steps, fingerprint=stage_fingerprint(config, name),
            data=stage_data(config, train, heads, tuple(subsets[curriculum]))))
    return stages


# --- evaluation ----------------------------------------------------------------------------------
def to_label_units(outputs: dict, scales: dict) -> dict:
    """Regression head h outputs y_h / s_h (unit-sized targets); this returns s_h * output in label units.
    Then the Huber loss on (s_h * o - y) / s_h has an O(1) gradient at o, like a cross-entropy: a head
    emitting degrees directly gets gradients 1/s_h smaller and barely shapes the shared trunk (measured:
    pose stayed at the constant predictor's error in every multi-task arm)."""
    return {h: o * scales[h] if h in scales else o for h, o in outputs.items()}


def regression_scales(config) -> dict[str, float]:
    specs = head_specs(config)
    return {h: sf.LABEL_SCALES[h] for h in HEADS if h in specs and specs[h].kind == "regression"}


def predict_fn(config, heads, decoupling: bool):
    net = build_net(config, heads, decoupling=decoupling, train=False)
    scales = regression_scales(config)
    return lambda variables, batch: to_label_units(net.apply(variables, batch["image"], train=False), scales)


def attribute_metric(config, head: str, outputs: np.ndarray, labels: np.ndarray, known: np.ndarray) -> float:
    """Accuracy in % (classification) or mean absolute error in label units (regression, mean over
    pose angles) over the examples whose label is known; NaN when none is."""
    keep = known > 0
    if not keep.any():
        return float("nan")
    if head_specs(config)[head].kind == "classification":
        return float(100.0 * np.mean(np.argmax(outputs[keep], axis=-1) == labels[keep]))
    return float(np.mean(np.abs(outputs[keep] - labels[keep])))


def metric_column(config, head: str) -> str:
    return f"{head} {'acc %' if head_specs(config)[head].kind == 'classification' else 'MAE'}"


def _evaluate_arms(config, store, test: ArraySource, mesh, out_dir: str) -> dict:
    available = list(head_specs(config))
    first, _ = next(ordered_batches(test, config.eval.batch_size))
    outputs, rates, params, heads_of = {}, {}, {}, {}
    for stage, models in stage_models(config).items():
        for model, (heads, decoupling) in models.items():
            arm_model = model if model.startswith("single_") else stage
            variables = store.load(stage)[model]
            predictor = Predictor(predict_fn(config, heads, decoupling), variables, mesh, config.eval.batch_size)
            outputs[arm_model] = predictor.predict_split(test, transform=lambda b: {"image": b["image"]})
            rates[arm_model] = predictor.throughput({"image": first["image"]})
            params[arm_model], heads_of[arm_model] = param_count(variables["params"]), heads
    known = test.arrays["known"]

    def metrics(stage_of_head):
        return {metric_column(config, h): attribute_metric(config, h, outputs[s][h], test.arrays[h],
                                                           known[:, HEADS.index(h)])
                for h, s in stage_of_head.items()}

    rows = []
    for arm, stage in ARMS.items():
        if stage is None:
            singles = [s for s in heads_of if s.startswith("single_")]
            row = {"arm": arm, "models": len(singles), "params": sum(params[s] for s in singles),
                   **metrics({heads_of[s][0]: s for s in singles}),
                   "images/s": 1.0 / sum(1.0 / rates[s] for s in singles)}  # the models run one after another
        else:
            row = {"arm": arm, "models": 1, "params": params[stage],
                   **metrics({h: stage for h in heads_of[stage]}), "images/s": rates[stage]}
        rows.append(row)
        logging.info("%s", row)
    if jax.process_index() == 0:
        _plots(config, store.workdir, out_dir, rows, test, outputs[FINAL_STAGE], available)
    return {"rows": rows, "columns": ["arm", "models", "params"] + [metric_column(config, h) for h in available]
            + ["images/s"]}


def describe_prediction(config, head: str, output: np.ndarray) -> object:
    """One head's output of one image -> a readable value: {'label', 'probability'} for a classification
    head, a float (or the (yaw, pitch, roll) dict for pose) for a regression head."""
    if head_specs(config)[head].kind == "classification":
        probs = np.exp(output - output.max())
        probs /= probs.sum()
        k = int(np.argmax(probs))
        names = class_names(config, head)
        return {"label": names[k] if k < len(names) else k, "probability": round(float(probs[k]), 4)}
    if head == "pose":
        return {axis: round(float(v), 2) for axis, v in zip(("yaw", "pitch", "roll"), output)}
    return round(float(output), 2)


def _caption(config, preds: dict, index: int) -> str:
    parts = []
    for h, out in preds.items():
        value = describe_prediction(config, h, out[index])
        if isinstance(value, dict) and "label" in value:
            parts.append(f"{h}: {value['label']}")
        elif isinstance(value, dict):
            parts.append("pose: " + "/".join(f"{v:.0f}" for v in value.values()))
        else:
            parts.append(f"{h}: {value:.1f}")
    return "\n".join(", ".join(parts[i:i + 2]) for i in range(0, len(parts), 2))


def _plots(config, workdir: str, out_dir: str, rows: list, test: ArraySource, final_outputs: dict, heads: list) -> None:
    """Loss curves of the run in `workdir`, per-attribute charts and sample faces, as PNGs in `out_dir`."""
    from jaxface.evaluation import plots  # matplotlib only where figures are drawn

    metrics = writers.read_metrics(workdir)
    plots.save_curves(os.path.join(out_dir, "loss_curves.png"),
                      {stage: (sorted(m), [m[s]["loss"] for s in sorted(m)]) for stage, m in metrics.items()},
                      title="training loss per stage", ylabel="loss", log_y=True)
    for kind, name, ylabel in (("classification", "accuracy", "test accuracy (%)"),
                               ("regression", "mae", "test MAE (label units)")):
        columns = [metric_column(config, h) for h in heads if head_specs(config)[h].kind == kind]
        groups = {ARM_LABELS[r["arm"]]: {c.split()[0]: r[c] for c in columns if c in r} for r in rows}
        if any(groups.values()):
            plots.save_bar_chart(os.path.join(out_dir, f"attributes_{name}.png"), groups,
                                 title=f"per-attribute {name} by arm", ylabel=ylabel)
    count = min(config.eval.num_sample_faces, len(test))
    captions = [_caption(config, {h: v for h, v in final_outputs.items()}, i) for i in range(count)]
    plots.save_captioned_grid(os.path.join(out_dir, "sample_faces.png"), test.arrays["image"][:count], captions,
                              max_images=count, title="test faces (unseen identities): full method's predictions")


def evaluate(config, store, data: dict, mesh, out_dir: str) -> Report:
    """Every arm on the eval split, and the claim: the full method reads all attributes faster than the
    single-task models without losing accuracy."""
    results = _evaluate_arms(config, store, data["test"], mesh, out_dir)
    rows = {r["arm"]: r for r in results["rows"]}
    single, full = rows["single-task (7 models)"], rows["staged + decoupling (full)"]
    gaps = {c: full[c] - single[c] for c in results["columns"][3:-1] if c in single and c in full}
    accuracy_gaps = {c: g for c, g in gaps.items() if c.endswith("acc %")}
    speedup = full["images/s"] / single["images/s"]
    summary = {"speedup_vs_single_task": speedup, "gap_full_minus_single": gaps,
               "all_accuracies_within_1_point": bool(all(g >= -1.0 for g in accuracy_gaps.values()))}
    return Report(
        title=f"Multi-task face attributes on {config.data.name} ({config.data.image_size}x"
              f"{config.data.image_size}, test split)",
        columns=results["columns"], rows=results["rows"],
        notes=[f"Seed 000 claim: one model reads all attributes faster than one model per attribute without "
               f"losing accuracy. Full method vs single-task: {speedup:.2f}x images/s; accuracy gaps (points, "
               f"full - single): " + ", ".join(f"{c.split()[0]} {g:+.2f}" for c, g in accuracy_gaps.items())
               + "; MAE gaps (full - single, lower is better): "
               + ", ".join(f"{c.split()[0]} {g:+.2f}" for c, g in gaps.items() if c not in accuracy_gaps) + ".",
               f"images/s: jitted inference of all attributes at batch {config.eval.batch_size} on "
               f"{devices.describe(mesh)}; the single-task arm runs its models one after another. "
               f"`experiments/bench_multitask.py` measures batch 1 and 64."],
        summary=summary)


# --- inference on image files (experiments/predict.py) ------------------------------------------
def input_format(config) -> dict:
    size = config.data.image_size
    return {"image": {"shape": [size, size, 3], "dtype": "uint8", "range": [0, 255], "layout": "HWC, RGB"}}


def predict_images(config, workdir: str, images: list[np.ndarray]) -> list[dict]:
    """Attributes of each RGB uint8 image [H, W, 3] (any size: centre-cropped square, then resized) from
    the final stage's exported network: [{head: value}] (see `describe_prediction`)."""
    variables = load_exported(workdir, FINAL_STAGE, ["net"])["net"]
    heads, decoupling = stage_models(config)[FINAL_STAGE]["net"]
    apply = jax.jit(predict_fn(config, heads, decoupling))
    results = []
    for image in images:
        batch = resize_images(np.asarray(image, np.uint8)[None], config.data.image_size)
        out = jax.device_get(apply(variables, {"image": batch}))
        results.append({h: describe_prediction(config, h, np.asarray(out[h][0])) for h in heads})
    return results
