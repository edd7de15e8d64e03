"""Two-teacher detector distillation (seed 003, claims 1-9).

A small detector (the student) learns from two frozen teachers at once: teacher_big (more parameters,
the student's image) and teacher_hr (the L-times larger image, with L-times larger early strides so its
N feature maps have the student's shapes, claim 5). The student's loss is its CenterNet task loss plus,
per teacher, a feature term (per-level MSE after a learned 1x1 adapter, claims 6-7) and a head term on
the M=3 head maps (heatmap, box size, centre offset; claim 8). Stages: both teachers, the student alone,
then the student distilled from each teacher and from both. Results: mAP@0.5 and images/s per stage.
"""

from __future__ import annotations

import functools
import os
from typing import Sequence

import jax
import jax.numpy as jnp
from absl import logging

from jaxface.data import centernet_targets, synthetic_gestures
from jaxface.data.pipeline import ShuffledBatches, check_dataset_name, in_memory, ordered_batches, resolve_data_dir
from jaxface.evaluation import decode_centernet, detection_average_precision, detection_records, plots
from jaxface.losses import centernet_loss, feature_distillation_loss, head_distillation_loss
from jaxface.models import CenterNet, FeatureAdapter
from jaxface.models.common import COMPUTE_DTYPES
from jaxface.train import checkpoints, checks, devices, loop
from jaxface.train.driver import Claim, Report
from jaxface.train.optimizers import make_optimizer
from jaxface.train.predict import image_input_format, predict_images as predict_on_images, predict_stages
from jaxface.train.stages import Stage, config_fingerprint

TEACHERS = ("big", "hr")
# model -> the image it sees
IMAGE_KEY = {"student": "image", "teacher_big": "image", "teacher_hr": "image_hr"}
KD_STAGES = {"student_kd_big": ("big",), "student_kd_hr": ("hr",), "student_kd_both": ("big", "hr")}
STAGES = ("teacher_big", "teacher_hr", "student", *KD_STAGES)
MODEL_OF = {s: s if s.startswith("teacher") else "student" for s in STAGES}  # the detector each stage trains


# --- configuration -------------------------------------------------------------------------------
def validate_config(config) -> None:
    """One clear line per problem; called before anything is written."""
    loop.validate_train_config(config, STAGES)
    check_dataset_name(config.data.name, ("synthetic_gestures",))
    checks.one_of(config.data.builder_config, synthetic_gestures.CONFIGS, "config.data.builder_config")
    L = config.data.resolution_factor
    if config.models.teacher_hr["stem_stride"] != L * config.models.student["stem_stride"]:
        raise ValueError(f"config.models.teacher_hr.stem_stride must be L={L} times the student's "
                         f"({L * config.models.student['stem_stride']}) so their feature maps align (claim 5)")
    checks.one_of(config.models.compute_dtype, COMPUTE_DTYPES, "config.models.compute_dtype")
    checks.non_negative(config.loss, "config.loss")
    checkpoints.check_imported_architectures(
        imported_stages(config), lambda stage: jax.eval_shape(lambda: _init_detector(config, stage, jax.random.key(0)))[
            "params"], {f"teacher_{t}": f"config.teachers.{t}_checkpoint" for t in TEACHERS})


def imported_stages(config) -> dict[str, str]:
    """{teacher stage: checkpoint directory} of the teachers taken from earlier runs (config.teachers)."""
    return checkpoints.stages_from_other_runs({f"teacher_{t}": (f"config.teachers.{t}_checkpoint",
                                                                config.teachers[f"{t}_checkpoint"]) for t in TEACHERS})


def build_detector(config, name: str, *, train: bool) -> CenterNet:
    """The linen module of one detector; `train=True` syncs BatchNorm statistics across devices."""
    return CenterNet(num_classes=synthetic_gestures.NUM_CLASSES, **dict(config.models[name]),
                     bn_axis_name=devices.batch_norm_axis(train),
                     dtype=jnp.dtype(config.models.compute_dtype))


def build_adapter(config, teacher: str) -> FeatureAdapter:  # 1x1 convs: student features -> `teacher`'s channels
    return FeatureAdapter(tuple(config.models[f"teacher_{teacher}"]["widths"]), jnp.dtype(config.models.compute_dtype))


# --- data ----------------------------------------------------------------------------------------
def load_data(config) -> dict:
    """{'train', 'test'}: random-access sources of the train and eval splits (prepared on first use;
    the train split held in memory when config.data.in_memory)."""
    data_dir, name = resolve_data_dir(config.data.data_dir), config.data.builder_config
    devices.main_process_first(lambda: synthetic_gestures.prepare(name, data_dir))
    train = synthetic_gestures.data_source(name, config.data.train_split, data_dir)
    return {"train": in_memory(train) if config.data.in_memory else train,
            "test": synthetic_gestures.data_source(name, config.data.eval_split, data_dir)}


def _with_targets(batch: dict, *, output_size: tuple[int, int], keep: tuple[str, ...]) -> dict:
    """`keep` of the batch + CenterNet targets at the student's output resolution (shared by all models)."""
    return {**{k: batch[k] for k in keep}, **centernet_targets.encode_centernet_batch(
        batch["boxes"], batch["labels"], num_classes=synthetic_gestures.NUM_CLASSES, output_size=output_size)}


def _input_size(config, name: str = "student") -> int:
    size = synthetic_gestures.CONFIGS[config.data.builder_config].lr_size
    return size * config.data.resolution_factor if IMAGE_KEY[name] == "image_hr" else size


def _output_size(config) -> tuple[int, int]:  # the heads' stride is twice the stem's
    return (_input_size(config) // (2 * config.models.student["stem_stride"]),) * 2


# --- per-device step functions -------------------------------------------------------------------
def _forward_train(model, variables, images):  # -> (outputs, new BatchNorm statistics)
    out, updates = model.apply(variables, images, train=True, mutable=["batch_stats"])
    return out, updates["batch_stats"]


def make_detector_step(config, name: str):
    """Trains one detector on its task loss alone (teachers and the student baseline)."""
    model, image_key = build_detector(config, name, train=True), IMAGE_KEY[name]

    def step(state, frozen, batch, rng):
        def loss_fn(params):
            out, stats = _forward_train(model, {"params": params, "batch_stats": state.batch_stats[name]},
                                        batch[image_key])
            loss, terms = centernet_loss(out["heads"], batch, wh_weight=config.loss.wh_weight,
                                         offset_weight=config.loss.offset_weight, axis_name=devices.AXIS)
            return loss, (stats, terms)

        (loss, (stats, terms)), grads = devices.value_and_mean_grad(loss_fn, state.params[name])
        return state.apply_gradients({name: grads}, {name: stats}), {"loss": loss, **terms}

    return step


def make_kd_step(config, teachers: tuple[str, ...]):
    """Student task loss + feature and head distillation from each of the T frozen teachers (claims 2-7):
    L = L_task + (1/T) sum_t [w_feat_t * mean_k MSE(A_t(F_k^s), F_k^t) + w_head_t * L_head(H^s, H^t)];
    1/T keeps distillation's share that of one teacher (summed, kd_both fell below either on validation)."""
    student = build_detector(config, "student", train=True)
    frozen_models = {t: build_detector(config, f"teacher_{t}", train=False) for t in teachers}
    adapters = {t: build_adapter(config, t) for t in teachers}

    def step(state, frozen, batch, rng):
        teacher_out = {t: frozen_models[t].apply(frozen[t], batch[IMAGE_KEY[f"teacher_{t}"]], train=False)
                       for t in teachers}

        def loss_fn(params):
            w = config.loss
            out, stats = _forward_train(
                student, {"params": params["student"], "batch_stats": state.batch_stats["student"]}, batch["image"])
            task, _ = centernet_loss(out["heads"], batch, wh_weight=w.wh_weight, offset_weight=w.offset_weight,
                                     axis_name=devices.AXIS)
            total, metrics = task, {"task": task}
            for t in teachers:
                adapted = adapters[t].apply({"params": params[f"adapter_{t}"]}, out["features"])
                feat = feature_distillation_loss(adapted, teacher_out[t]["features"])
                head, _ = head_distillation_loss(out["heads"], teacher_out[t]["heads"], batch["mask"],
                                                 heatmap_weight=w.kd_heatmap_weight, wh_weight=w.wh_weight,
                                                 offset_weight=w.offset_weight, axis_name=devices.AXIS)
                total += (w[f"feature_weight_{t}"] * feat + w[f"head_weight_{t}"] * head) / len(teachers)
                metrics.update({f"feature_{t}": feat, f"head_{t}": head})
            return total, (stats, metrics)

        (loss, (stats, metrics)), grads = devices.value_and_mean_grad(loss_fn, state.params)
        return state.apply_gradients(grads, {"student": stats}), {"loss": loss, **metrics}

    return step


# --- stages --------------------------------------------------------------------------------------
def _init_detector(config, name: str, rng) -> dict:
    size = _input_size(config, name)
    init = jax.jit(functools.partial(build_detector(config, name, train=False).init, train=False))
    return init(rng, jnp.zeros((1, size, size, 3), jnp.uint8))


# Config keys that shape every stage; each stage adds its models, its length and what it reads.
SHARED_KEYS = ("seed", "data.name", "data.builder_config", "data.resolution_factor", "data.train_split",
               "models.compute_dtype", "train.batch_size", "optimizer", "loss.wh_weight", "loss.offset_weight")


def stage_fingerprint(config, name: str, reused: Sequence[str] = ()) -> dict:
    """The config values that shape stage `name` (`Stage.fingerprint`): a distilled student also depends
    on its teachers' (or on the checkpoint a reused teacher is read from)."""
    keys = [*SHARED_KEYS, f"train.steps.{name}"]
    if name in KD_STAGES:
        keys += ["models.student", "loss"]
        for t in KD_STAGES[name]:
            keys += [f"teachers.{t}_checkpoint"] if f"teacher_{t}" in reused else [f"train.steps.teacher_{t}"]
            keys.append(f"models.teacher_{t}")
    else:
        keys.append(f"models.{name}")
    return config_fingerprint(config, keys)


def make_stages(config, data: dict) -> list[Stage]:
    """The six stages, less the teachers reused from earlier runs (`imported_stages`)."""
    train_source, reused, steps = data["train"], tuple(imported_stages(config)), config.train.steps
    # Every student arm starts from the same initial weights and sees the same batches: a controlled comparison.
    student_key = jax.random.fold_in(loop.seed_key(config.seed), 1)

    def data(keep):
        transform = functools.partial(_with_targets, output_size=_output_size(config), keep=keep)
        return ShuffledBatches(train_source, global_batch_size=config.train.batch_size, seed=config.seed,
                               transform=transform)

    stages = []
    for name in (n for n in ("teacher_big", "teacher_hr", "student") if n not in reused):
        stages.append(Stage(
            name=name, num_steps=steps[name], step=make_detector_step(config, name),
            init=lambda rng, load, name=name: {name: _init_detector(
                config, name, student_key if name == "student" else rng)},
            optimizers={name: make_optimizer(config.optimizer, steps[name])},
            data=data((IMAGE_KEY[name],)), fingerprint=stage_fingerprint(config, name)))
    for name, teachers in KD_STAGES.items():
        def init(rng, load, teachers=teachers):
            out, size = {"student": _init_detector(config, "student", student_key)}, _input_size(config)
            features = build_detector(config, "student", train=False).apply(
                out["student"], jnp.zeros((1, size, size, 3), jnp.uint8), train=False)["features"]
            return {**out, **{f"adapter_{t}": build_adapter(config, t).init(jax.random.fold_in(rng, i), features)
                              for i, t in enumerate(teachers)}}

        stages.append(Stage(
            name=name, num_steps=steps[name], step=make_kd_step(config, teachers), init=init,
            optimizers=dict.fromkeys(["student"] + [f"adapter_{t}" for t in teachers],
                                     make_optimizer(config.optimizer, steps[name])),
            frozen=lambda load, teachers=teachers: {t: load(f"teacher_{t}")[f"teacher_{t}"] for t in teachers},
            data=data(("image", "image_hr") if "hr" in teachers else ("image",)),
            export=("student",),  # adapters are dropped at export
            fingerprint=stage_fingerprint(config, name, reused)))
    return stages


# --- evaluation ----------------------------------------------------------------------------------
def predict_fn(config, name: str):  # network `name`'s inference: batch -> decoded detections
    model = build_detector(config, name, train=False)

    def predict(variables, batch):
        heads = model.apply(variables, batch[IMAGE_KEY[name]], train=False)["heads"]
        out = decode_centernet(heads["heatmap"], heads["wh"], heads["offset"], top_k=config.eval.top_k)
        return {f"pred_{k}": v for k, v in out.items()}

    return predict


def evaluate(config, store, data: dict, mesh, out_dir: str) -> Report:
    """mAP@0.5 of every stage on the eval split, and the claim: the two-teacher student beats the student;
    figures go to `out_dir`."""
    test_source, limit = data["test"], None if config.eval.num_examples < 0 else config.eval.num_examples
    first, _ = next(ordered_batches(test_source, config.eval.batch_size))
    predict = {m: predict_fn(config, m) for m in ("teacher_big", "teacher_hr", "student")}
    found = predict_stages(store, {s: (s, m, predict[m]) for s, m in MODEL_OF.items()}, test_source, mesh,  # each
                           config.eval.batch_size, limit=limit, timed_batch=first, repeats=30,  # network timed once
                           keep_inputs=("boxes", "labels", "image"))
    rows, per_class = [], {}
    for stage, r in found.items():
        p, model = r["outputs"], MODEL_OF[stage]
        per_class[stage] = ap = detection_average_precision(
            p["pred_boxes"], p["pred_scores"], p["pred_classes"], p["boxes"], p["labels"],
            num_classes=synthetic_gestures.NUM_CLASSES, class_names=synthetic_gestures.CLASS_NAMES)
        size = _input_size(config, model)
        rows.append({"stage": stage, "model": model, "params": r["params"], "input": f"{size}x{size}",
                     "mAP@0.5": ap["mAP"], "images/s": r["images/s"]})
        logging.info("[%s] mAP@0.5 %.4f, %.0f images/s", stage, ap["mAP"], r["images/s"])
    for stage in ("student", "student_kd_both") if jax.process_index() == 0 else ():  # figures: process 0
        p = found[stage]["outputs"]
        plots.save_detection_grid(
            os.path.join(out_dir, f"detections_{stage}.png"), p["image"][:16], p["pred_boxes"][:16],
            p["pred_scores"][:16], p["pred_classes"][:16], class_names=synthetic_gestures.CLASS_NAMES,
            gt_boxes=p["boxes"][:16], gt_labels=p["labels"][:16], score_threshold=config.eval.score_threshold,
            title=f"{stage}: predictions (solid) and ground truth (dashed)")
    return Report(
        title="Two-teacher distillation on synthetic_gestures/" + config.data.builder_config,
        columns=["stage", "model", "params", "input", "mAP@0.5", "images/s"], rows=rows,
        notes=[f"Split {config.data.eval_split!r}; images/s = jitted inference at batch {config.eval.batch_size} on "
               f"{devices.describe(mesh)}.",
               *[f"{s} was not trained in this run: reused from {d}." for s, d in imported_stages(config).items()]],
        extra={"per_class_AP": per_class})


# --- what the core and experiments/ read: seeds, claims, export, inference on image files ---------
def share_across_seeds(config, first_workdir: str):  # config.num_seeds > 1 (jaxface.train.driver)
    """Later seeds train only the students: the teachers are the first seed's (or config.teachers')."""
    for t in TEACHERS:
        config.teachers[f"{t}_checkpoint"] = config.teachers[f"{t}_checkpoint"] or first_workdir
    return config


# What the seed claims, judged by the core over the seeds (rows are stages; higher mAP is better).
CLAIMS = (Claim("student_kd_both", "student", "mAP@0.5", "(seed 003) the two-teacher student beats the student alone"),
          Claim("student_kd_both", "student_kd_big", "mAP@0.5", "two teachers beat the big teacher alone"),
          Claim("student_kd_both", "student_kd_hr", "mAP@0.5", "two teachers beat the high-resolution teacher alone"))
LOSS_CURVE = ("task", "loss")  # the detection loss is comparable across stages; distilled ones log it as 'task'
EXPORT = ("student_kd_both", "student")  # the method's model: the student distilled from both teachers


def input_format(config) -> dict:
    return image_input_format(_input_size(config))


def predict_images(config, workdir: str, images: list) -> list[dict]:
    """Detections of each RGB uint8 image [H, W, 3] (any size: its centred square is resized to the
    student's input) by the two-teacher student, those scoring >= config.eval.score_threshold:
    [{'detections': [{'class', 'score', 'box_xyxy': [x0, y0, x1, y1] in the image's pixels}]}]."""
    variables = checkpoints.load_exported(workdir, EXPORT[0], [EXPORT[1]])[EXPORT[1]]
    found = predict_on_images(predict_fn(config, "student"), variables, images, _input_size(config))
    return [{"detections": detection_records(out["pred_boxes"], out["pred_scores"], out["pred_classes"],
                                             synthetic_gestures.CLASS_NAMES, top=top, left=left, side=side,
                                             score_threshold=config.eval.score_threshold)}
            for out, (top, left, side) in found]
