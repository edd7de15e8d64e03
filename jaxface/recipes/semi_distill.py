"""Semi-supervised knowledge distillation: a student and a teacher trained together (seed 004).

Data (`jaxface.data.gesture_crops`): a fraction of each class labeled, the rest without labels. A step reads
B_l labeled and B_u = mu B_l unlabeled images (`samplers.CombinedBatches`), weak views of all, strong views
of U too. Loss per network m in {student S, teacher T} (z_m: logits on the weak views of the labeled L
and unlabeled U images, z_m^s on the strong views of U, y: labels of L, t: the step):
  CE_m = sum_{i in L} -log softmax(z_m,i)[y_i] / |L|
  KD_m = kd_logit_loss(z_m, stop_grad(z_other), T) on L and U             (T^2 KL(p_other^T || p_m^T), mean)
         (loss.kd_view='strong': z_m on U from the strong views, z_other still from the weak ones: Noisy Student)
  PL_m = sum_{j in U} 1[max q_j >= tau] * -log softmax(z_m,j^s)[argmax q_j] / |U|,
         q_j = softmax(stop_grad(z_src,j)), src = m ('own') or the teacher ('teacher')   (FixMatch)
  L_S = ce_weight CE_S + r(t) (kd_weight KD_S + pl_weight PL_S);  L_T = ce_weight CE_T + r(t) (kd_back_weight KD_T
        + pl_weight PL_T),  r(t) = exp(-5 (1 - min(t / rampup_steps, 1))^2) in co-trained arms, else 1 (Mean Teacher)
with |L|, |U| and means over the global batch. Each loss reads the other network only through stop_grad,
so one gradient of L_S + L_T updates each with its own optimizer. Arms (the same batches at each label
fraction): student_sup, teacher_sup (CE only), kd_offline (student; KD from the frozen teacher_sup),
semi_kd (both trained; the teacher starts from teacher_sup's weights, `train.teacher_start`), semi_kd_pl (+ PL).
Completion: `train.steps`, or early stopping on validation accuracy of the student (`train.patience`). A
derived stage per co-trained arm keeps the better of its student and teacher by validation accuracy;
`final` (exported): the better arm's at the top fraction. `CLAIMS`: semi_kd beats student_sup."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from optax import softmax_cross_entropy_with_integer_labels as _nll  # -log softmax(logits)[label] per example

from jaxface.data import gesture_crops, idx_images, synthetic_gestures
from jaxface.data.pipeline import check_dataset_name, resolve_data_dir
from jaxface.data.samplers import CombinedBatches
from jaxface.losses import global_ratio, kd_logit_loss
from jaxface.models.classifier import Classifier
from jaxface.models.common import COMPUTE_DTYPES
from jaxface.train import checks, devices, loop
from jaxface.train.checkpoints import finished_stage_dir, load_exported, read_done_marker
from jaxface.train.driver import Claim, Report
from jaxface.train.optimizers import make_optimizer
from jaxface.train.predict import image_input_format, predict_images as predict_on_images, predict_stages
from jaxface.train.stages import Stage, Validation, config_fingerprint
from jaxface.train.validation import select_better

MODELS = ("student", "teacher")
TRAINS = {"student_sup": ("student",), "teacher_sup": ("teacher",), "kd_offline": ("student",),
          "semi_kd": MODELS, "semi_kd_pl": MODELS}
ARMS, CO_ARMS = tuple(TRAINS), ("semi_kd", "semi_kd_pl")
FULL = "student_full"  # the student on every training label: the fully supervised reference
STEP_KEYS, EXPORT = (FULL, *ARMS), ("final", "model")
LOSS_CURVE = ("student/ce", "teacher/ce")  # the labeled cross-entropy, comparable across arms


# --- configuration -------------------------------------------------------------------------------
def validate_config(config) -> None:
    """One clear line per problem; called before anything is written."""
    loop.validate_train_config(config, STEP_KEYS, MODELS)  # optimizer.per_model: MODELS
    check_dataset_name(config.data.name, ("gesture_crops", *idx_images.DEFAULT_DIRS))
    if config.data.name in idx_images.DEFAULT_DIRS:  # the four IDX files must be there
        idx_images.check_manual_dir(config.data.name, config.data.manual_dir)
    for key, allowed in {"data.builder_config": gesture_crops.CONFIGS, "models.compute_dtype": COMPUTE_DTYPES,
                         "loss.pl_from": ("own", "teacher"), "loss.kd_view": ("weak", "strong"),
                         "train.teacher_start": ("scratch", "teacher_sup")}.items():
        checks.one_of(functools.reduce(getattr, key.split("."), config), allowed, f"config.{key}")
    checks.non_negative(config.data.augment, "config.data.augment")
    checks.non_negative({k: v for k, v in config.loss.items() if not isinstance(v, str)}, "config.loss")
    ranges = {"len(data.label_fractions)": (len(config.data.label_fractions), 1, 100),  # {name: fraction}
              **{f"data.label_fractions.{k}": (v, 1e-6, 0.999) for k, v in config.data.label_fractions.items()}}
    ranges.update({"data.crop_size": (config.data.crop_size, 8, 512), "loss.temperature": (config.loss.temperature,
                   1e-3, 100.0), "data.crop_context": (config.data.crop_context, 1.0, 4.0), "loss.pl_threshold":
                   (config.loss.pl_threshold, 0.0, 1.0), "train.patience": (config.train.patience, 0, 1e9),
                   "train.validate_every_steps": (config.train.validate_every_steps, 1, 1e9)})
    for key, (value, low, high) in ranges.items():
        checks.in_range(value, low, high, f"config.{key}")
    for key, value in (("train.batch_size", config.train.batch_size), ("eval.batch_size", config.eval.batch_size)):
        if value % jax.device_count():
            raise ValueError(f"config.{key}={value} must be a multiple of the {jax.device_count()} devices")
    if not isinstance(config.train.unlabeled_ratio, int) or config.train.unlabeled_ratio < 1:
        raise ValueError(f"config.train.unlabeled_ratio={config.train.unlabeled_ratio} must be an integer >= 1")


def class_names(config) -> tuple[str, ...]:
    return idx_images.CLASS_NAMES.get(config.data.name, gesture_crops.CLASS_NAMES)


def build(config, name: str, *, train: bool) -> Classifier:
    """The student or the teacher; `train=True` syncs BatchNorm statistics across devices."""
    return Classifier(**dict(config.models[name]), num_classes=len(class_names(config)),
                      bn_axis_name=devices.batch_norm_axis(train), dtype=jnp.dtype(config.models.compute_dtype))


@functools.lru_cache(maxsize=8)
def _jitted_init(module: Classifier, size: int):  # compiled once per network, not per stage
    return jax.jit(lambda rng: module.init(rng, jnp.zeros((1, size, size, 3), jnp.uint8), train=False))


def _init(config, name: str, rng) -> dict:
    return _jitted_init(build(config, name, train=False), config.data.crop_size)(rng)


# --- data ----------------------------------------------------------------------------------------
def load_data(config) -> dict:
    """{'train', 'validation', 'test' (the eval split), <fraction name>: (labeled, unlabeled)} image sets."""
    data_dir, name, size = resolve_data_dir(config.data.data_dir), config.data.builder_config, config.data.crop_size
    if config.data.name in idx_images.DEFAULT_DIRS:
        directory = idx_images.check_manual_dir(config.data.name, config.data.manual_dir)
        crops = functools.partial(idx_images.load, directory, size=size, validation_size=config.data.validation_size)
    else:
        devices.main_process_first(lambda: synthetic_gestures.prepare(name, data_dir))
        crops = functools.partial(gesture_crops.load, name, data_dir=data_dir, size=size,
                                  context=config.data.crop_context)
    train = crops(config.data.train_split)
    labeled = {f: gesture_crops.labeled_indices(train.arrays["label"], fraction, config.seed)
               for f, fraction in config.data.label_fractions.items()}
    return {"train": train, "validation": crops(config.data.validation_split), "test": crops(config.data.eval_split),
            **{f: gesture_crops.split_labeled(train, chosen) for f, chosen in labeled.items()}}


def batches(config, labeled, unlabeled=None) -> CombinedBatches:
    """B_l labeled (+ mu B_l unlabeled, without labels) crops per step, with their views."""
    return gesture_crops.semi_supervised_batches(labeled, unlabeled, batch_size=config.train.batch_size,
                                                 unlabeled_ratio=config.train.unlabeled_ratio, seed=config.seed,
                                                 augment=dict(config.data.augment))


# --- the per-device step ------------------------------------------------------------------------
def make_step(config, arm: str):
    """One update of every network `arm` trains on the loss of the module docstring."""
    trained, w = TRAINS.get(arm, ("student",)), config.loss
    uses_unlabeled, pseudo = arm in ("kd_offline", *CO_ARMS), arm == "semi_kd_pl"
    strong_kd = uses_unlabeled and w.kd_view == "strong"  # distilled on U's strong views, targets from weak ones
    unlabeled_views = ("unlabeled/image", "unlabeled/image_strong")[:uses_unlabeled + (pseudo or strong_kd)]
    nets = {m: build(config, m, train=True) for m in trained}
    frozen_teacher = build(config, "teacher", train=False)

    def step(state, frozen, batch, rng):
        x_l, y = batch["labeled/image"], batch["labeled/label"]
        views = [x_l] + [batch[k] for k in unlabeled_views]
        x, n_l, n_w = jnp.concatenate(views), x_l.shape[0], sum(v.shape[0] for v in views[:2])  # n_w: weak views
        fixed = {"teacher": frozen_teacher.apply(frozen["teacher"], x[:n_w], train=False)} if frozen else {}
        ramp = jnp.exp(-5.0 * (1.0 - jnp.minimum(state.step / w.rampup_steps, 1.0)) ** 2) \
            if arm in CO_ARMS and w.rampup_steps else 1.0  # r(t): 0 -> 1 over the first rampup_steps

        def loss_fn(params):
            logits, stats, total, metrics = {}, {}, 0.0, {}
            for m in trained:
                out, updates = nets[m].apply({"params": params[m], "batch_stats": state.batch_stats[m]}, x,
                                             train=True, mutable=["batch_stats"])
                logits[m], stats[m] = out, updates["batch_stats"]
            for m in trained:
                z, kd_weight = logits[m], (w.kd_weight if m == "student" else w.kd_back_weight)
                ce = global_ratio(jnp.sum(_nll(z[:n_l], y)), n_l, axis_name=devices.AXIS)
                loss, metrics[f"{m}/ce"] = w.ce_weight * ce, ce
                other = {**fixed, **logits}.get("teacher" if m == "student" else "student")
                if uses_unlabeled and other is not None:
                    own = jnp.concatenate([z[:n_l], z[n_w:]]) if strong_kd else z[:n_w]  # L weak, U weak|strong
                    kd = kd_logit_loss(own, other[:n_w], w.temperature)  # mean over L and U, other's grad stopped
                    loss, metrics[f"{m}/kd"] = loss + ramp * kd_weight * kd, kd
                if pseudo:
                    source = z if w.pl_from == "own" else logits["teacher"]
                    q = jax.nn.softmax(jax.lax.stop_gradient(source[n_l:n_w]))
                    mask = (jnp.max(q, -1) >= w.pl_threshold).astype(jnp.float32)
                    pl = global_ratio(jnp.sum(mask * _nll(z[n_w:], q.argmax(-1))), n_w - n_l, axis_name=devices.AXIS)
                    loss = loss + ramp * w.pl_weight * pl
                    metrics.update({f"{m}/pl": pl, f"{m}/pl_mask": jnp.mean(mask)})
                total, metrics[f"{m}/loss"] = total + loss, loss
            return total, (stats, metrics)

        (loss, (stats, metrics)), grads = devices.value_and_mean_grad(loss_fn, {m: state.params[m] for m in trained})
        return state.apply_gradients(grads, stats), {"loss": loss, **metrics}

    return step


# --- validation, selection and stages ----------------------------------------------------------
def make_predict(config, model: str):
    """predict(variables, batch) -> {'pred', 'prob'} of network `model` ('student' or 'teacher')."""
    net = build(config, model, train=False)

    def predict(variables, batch):
        probs = jax.nn.softmax(net.apply(variables, batch["image"], train=False))
        return {"pred": jnp.argmax(probs, -1), "prob": jnp.max(probs, -1)}

    return predict


def accuracy(outputs: dict) -> dict:  # Validation.metrics
    return {"accuracy": float(np.mean(outputs["pred"] == outputs["label"]))}


def validation(config, data, predict, model: str = "student") -> Validation:  # accuracy on the validation split
    return Validation(model, predict, data["validation"], accuracy, config.train.validate_every_steps,
                      config.eval.batch_size, keep_inputs=("label",), select="accuracy", patience=config.train.patience)


SHARED_KEYS = ("seed", "data.name", "data.builder_config", "data.train_split", "data.validation_split",
               "data.crop_size", "data.crop_context", "data.augment", "models.compute_dtype", "train.batch_size",
               "train.validate_every_steps", "train.patience", "optimizer")


def stage_fingerprint(config, arm: str, fraction: str | None) -> dict:
    keys = [*SHARED_KEYS, f"train.steps.{arm}", *(f"models.{m}" for m in TRAINS.get(arm, ("student",)))]
    keys += [f"data.label_fractions.{fraction}", "train.unlabeled_ratio"] if fraction is not None else []
    warm = arm in CO_ARMS and config.train.teacher_start == "teacher_sup"
    keys += ["models.teacher", "train.steps.teacher_sup"] if arm == "kd_offline" or warm else []
    keys += ["train.teacher_start"] if arm in CO_ARMS else []
    return config_fingerprint(config, keys + (["loss"] if arm in ("kd_offline", *CO_ARMS) else []))


def make_stages(config, data: dict) -> list[Stage]:
    """student_full; per label fraction f the five arms and a selection per co-trained arm; final."""
    predicts, steps = {m: make_predict(config, m) for m in MODELS}, config.train.steps
    keys = {m: jax.random.fold_in(loop.seed_key(config.seed), i + 1) for i, m in enumerate(MODELS)}  # same start
    warm = lambda arm, m: arm in CO_ARMS and m == "teacher" and config.train.teacher_start == "teacher_sup"

    def stage(name, arm, source, fraction=None, **kw):
        trained = TRAINS.get(arm, ("student",))
        return Stage(name=name, num_steps=steps[arm], step=make_step(config, arm), data=source,
                     init=lambda rng, load: {m: load(f"teacher_sup_{fraction}")["teacher"] if warm(arm, m)
                                             else _init(config, m, keys[m]) for m in trained},
                     optimizers={m: make_optimizer(config.optimizer, steps[arm], m) for m in trained},
                     validation=validation(config, data, predicts[trained[0]], trained[0]),
                     fingerprint=stage_fingerprint(config, arm, fraction), **kw)

    stages = [stage(FULL, FULL, batches(config, data["train"]))]
    for f in config.data.label_fractions:
        sup, combined = batches(config, data[f][0]), batches(config, *data[f])  # data[f]: (labeled, unlabeled)
        # supervised arms read only the labeled stream: the same labeled batches as the others
        stages += [stage(f"student_sup_{f}", "student_sup", sup, f), stage(f"teacher_sup_{f}", "teacher_sup", sup, f),
                   stage(f"kd_offline_{f}", "kd_offline", combined, f,
                         frozen=lambda load, f=f: {"teacher": load(f"teacher_sup_{f}")["teacher"]})]
        for arm in CO_ARMS:
            stages.append(stage(f"{arm}_{f}", arm, combined, f))
            chosen = select_better(f"{arm}_select_{f}", [(f"{arm}_{f}", m, predicts[m]) for m in MODELS],
                                   validation(config, data, predicts["student"]), export_as="model")
            stages.append(dataclasses.replace(chosen, fingerprint=stage_fingerprint(config, arm, f)))
    top = max(config.data.label_fractions, key=config.data.label_fractions.get)
    final = select_better("final", [(f"{arm}_{top}", m, predicts[m]) for arm in CO_ARMS for m in MODELS],
                          validation(config, data, predicts["student"]), export_as="model")  # the best of both arms
    return stages + [dataclasses.replace(final, fingerprint={k: v for arm in CO_ARMS for k, v in
                                                             stage_fingerprint(config, arm, top).items()})]


# --- evaluation ----------------------------------------------------------------------------------
def evaluate(config, store, data: dict, mesh, out_dir: str) -> Report:
    """Accuracy of every arm's models and choices, and the claim: semi_kd beats supervised-only training."""
    predicts, fractions = {m: make_predict(config, m) for m in MODELS}, config.data.label_fractions
    entries = {f"{FULL}/student": (FULL, "student", "all labels")}
    for f in fractions:
        entries.update({f"{arm}_{f}/{m}": (f"{arm}_{f}", m, f) for arm in ARMS for m in TRAINS[arm]})
        entries.update({f"{arm}_select_{f}/model": (f"{arm}_select_{f}", "model", f) for arm in CO_ARMS})
    entries["final/model"] = ("final", "model", max(fractions, key=fractions.get))
    network = {k: store.summary(s)["decision"]["chosen"].split("/")[1] if m == "model" else m
               for k, (s, m, _) in entries.items()}  # a selection exports the network it chose as 'model'
    models = {k: (s, m, predicts[network[k]]) for k, (s, m, _) in entries.items()}
    found = {split: predict_stages(store, models, data[split], mesh, config.eval.batch_size, keep_inputs=("label",))
             for split in ("validation", "test")}
    acc = {split: {k: accuracy(r["outputs"])["accuracy"] for k, r in found[split].items()} for split in found}
    rows, summary, notes = [], {}, []
    for key, (stage, model, f) in entries.items():
        n = len(data["train"]) if f == "all labels" else len(data[f][0])
        model = f"{network[key]} (chosen)" if model == "model" else model
        rows.append({"labels": f"{f} ({n})", "stage": stage, "model": model, "params": found["test"][key]["params"],
                     "val acc": acc["validation"][key], "test acc": acc["test"][key]})
    for f in fractions:
        sup = max((f"student_sup_{f}/student", f"teacher_sup_{f}/teacher"), key=acc["validation"].get)
        ours, pl = acc["test"][f"semi_kd_select_{f}/model"], acc["test"][f"semi_kd_pl_select_{f}/model"]
        summary[f] = {"semi_kd": ours, "semi_kd_pl": pl, "supervised": acc["test"][sup], "supervised_arm": sup,
                      "student_sup": acc["test"][f"student_sup_{f}/student"], "claim_holds": ours > acc["test"][sup]}
        notes.append(f"{f} ({len(data[f][0])} labels): semi_kd {ours:.4f}, semi_kd_pl {pl:.4f} vs supervised-only "
                     f"{acc['test'][sup]:.4f} ({sup.split('/')[0]}, the better by validation) test accuracy.")
    summary.update(fully_supervised_student=acc["test"][f"{FULL}/student"],
                   final_chosen=store.summary("final")["decision"]["chosen"])
    notes += [f"Fully supervised student (all {len(data['train'])} labels): {summary['fully_supervised_student']:.4f} "
              f"test accuracy. Anchors (CIFAR-10): FixMatch 94.9 % with 250 labels, Mean Teacher 93.7 % with 4,000.",
              f"Selections use the validation split ({len(data['validation'])} images); test split "
              f"{config.data.eval_split!r} ({len(data['test'])} images) only for this table. Final model: "
              f"{summary['final_chosen']}."]
    name = config.data.name + (f"/{config.data.builder_config}" if config.data.name == "gesture_crops" else "")
    return Report(f"Semi-supervised distillation on {name}", list(rows[0]), rows, notes, summary)


# --- what the core and experiments/ read ---------------------------------------------------------
def CLAIMS(config):  # seed 004 per label fraction (semi_kd: the better of its two networks by validation)
    return tuple(Claim({"stage": f"semi_kd_select_{f}"}, {"stage": f"student_sup_{f}"}, "test acc",
                       f"(seed 004) semi-supervised distillation beats the supervised student at {f}")
                 for f in config.data.label_fractions)


def input_format(config) -> dict:
    return image_input_format(config.data.crop_size)


def predict_images(config, workdir: str, images: list) -> list[dict]:
    """[{'class', 'score'}] of each RGB uint8 image [H, W, 3] (centred square, resized) by the final model."""
    variables = load_exported(workdir, EXPORT[0], [EXPORT[1]])[EXPORT[1]]
    network = read_done_marker(finished_stage_dir(workdir, EXPORT[0]))["decision"]["chosen"].split("/")[1]
    found = predict_on_images(make_predict(config, network), variables, images, config.data.crop_size)
    return [{"class": class_names(config)[int(out["pred"])], "score": float(out["prob"])} for out, _ in found]
