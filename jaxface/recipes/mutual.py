"""Mutual cross-supervision of two segmentation models from box labels (seed 002, example 1).

Only boxes are given. Round 0 trains two U-Nets (`models.a`, `models.b`: other initialiser, init, widths)
on weak labels (`jaxface.data.box_labels`: the largest ellipse inscribed in each box, its inner rim as
boundary, ignore on dividing lines between ellipses and along their edges, background outside boxes). In round n+1 EACH model trains on the weak labels fused
with the OTHER model's round-n predictions inside boxes (`box_labels.fuse`), continuing from its previous
weights (fresh schedule). Loss: masked pixel cross-entropy (+ `loss.dice_weight` x foreground soft Dice)
over the global batch. Arms (stages), from the same initial weights of model a and the same batches:
  boxes / full   a on the boxes as masks / on the ground truth, as long as round 0 + all rounds
  round0         a and b on the ellipse labels (round 0 of every box-supervised arm below)
  ellipse_r<n>   a continues on the ellipse labels (ellipse only)
  self_r<n>      a on the weak labels fused with its OWN round n-1 predictions (self-training)
  mutual_r<n>    a and b, each on the weak labels fused with the OTHER's round n-1 predictions
Evaluated per round and arm (`jaxface.evaluation.segmentation`); `CLAIMS`: mutual > self > ellipse only."""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxface.data import box_labels, cell_folder, cell_sets, synthetic_cells
from jaxface.data.pipeline import ArraySource, check_dataset_name
from jaxface.evaluation.segmentation import instances_from_classes, save_overlays, segmentation_metrics
from jaxface.evaluation.tiling import predict_tiled
from jaxface.losses import masked_pixel_cross_entropy, soft_dice_loss
from jaxface.models.common import COMPUTE_DTYPES, param_count
from jaxface.models.unet import INITS, UNet
from jaxface.train import checkpoints, checks, devices, loop
from jaxface.train.driver import Claim, Report
from jaxface.train.optimizers import make_optimizer
from jaxface.train.predict import Predictor
from jaxface.train.stages import Stage, config_fingerprint

STEP_KEYS = ("boxes", "full", "round0", "round")
ARMS = ("ellipse", "self", "mutual")
ARM_NAMES = {"boxes": "boxes as masks", "full": "fully supervised", "ellipse": "ellipse only",
             "self": "self-training", "mutual": "mutual (seed)"}


# --- configuration and models --------------------------------------------------------------------
def validate_config(config) -> None:
    """One clear line per problem; called before anything is written."""
    loop.validate_train_config(config, STEP_KEYS)
    check_dataset_name(config.data.name, cell_sets.NAMES)
    if config.data.name == "folder":
        checks.in_range(config.data.image_size, 8, 4096, "config.data.image_size")
        cell_folder.read_annotations(config.data.path)  # a malformed box file: one line naming file and entry
    else:
        checks.one_of(config.data.builder_config, synthetic_cells.CONFIGS, "config.data.builder_config")
    checks.one_of(config.models.compute_dtype, COMPUTE_DTYPES, "config.models.compute_dtype")
    size = cell_sets.image_size(config.data)
    for m in ("a", "b"):
        widths = tuple(config.models[m]["widths"])
        checks.one_of(config.models[m]["initializer"], INITS, f"config.models.{m}.initializer")
        if not widths or any(not isinstance(w, int) or w < 1 for w in widths) or size % 2 ** (len(widths) - 1):
            raise ValueError(f"config.models.{m}.widths={widths}; allowed: positive integers, at most "
                             f"{int(np.log2(size & -size)) + 1} levels for {size}x{size} images")
    if not isinstance(config.rounds, int) or not 1 <= config.rounds <= 10:
        raise ValueError(f"config.rounds={config.rounds!r}; allowed: an integer in [1, 10]")
    checks.one_of(config.labels.shape, box_labels.SHAPES, "config.labels.shape")
    checks.in_range(config.labels.edge_width, 0, 5, "config.labels.edge_width")
    for key in ("confidence", "min_box_foreground"):
        checks.in_range(config.fusion[key], 0.0, 1.0, f"config.fusion.{key}")
    checks.one_of(config.fusion.keep_dividing_lines, (True, False), "config.fusion.keep_dividing_lines")
    checks.non_negative(config.loss, "config.loss")


def build_unet(config, model: str, *, train: bool) -> UNet:
    """Model 'a' or 'b'; `train=True` syncs BatchNorm statistics across devices."""
    m = config.models[model]
    return UNet(widths=tuple(m["widths"]), initializer=m["initializer"], dtype=jnp.dtype(config.models.compute_dtype),
                bn_axis_name=devices.batch_norm_axis(train))


# --- data ----------------------------------------------------------------------------------------
def load_data(config) -> dict:
    """{'train', 'test'} (`cell_sets.load_split`; 'test' is config.data.eval_split: choices on 'validation');
    folder data: 'train' holds the whole images (random crops), 'test' their tiles."""
    load = functools.partial(cell_sets.load_split, config.data, config.labels,
                             main_process_first=devices.main_process_first)
    return {"train": ArraySource(load(config.data.train_split, config.data.max_train_examples, training=True)),
            "test": ArraySource(load(config.data.eval_split, config.eval.num_examples))}


# --- per-device step functions -------------------------------------------------------------------
def make_step(config, models: tuple[str, ...]):
    """Updates every model m of the stage on its own batch['label_<m>'] / batch['ignore_<m>']:
    L_m = masked CE + dice_weight * soft Dice of the foreground on the kept pixels."""
    nets = {m: build_unet(config, m, train=True) for m in models}

    def step(state, frozen, batch, rng):
        def loss_fn(params):
            total, stats, metrics = 0.0, {}, {}
            for m in models:
                logits, updates = nets[m].apply({"params": params[m], "batch_stats": state.batch_stats[m]},
                                                batch["image"], train=True, mutable=["batch_stats"])
                labels, ignore = batch[f"label_{m}"], batch[f"ignore_{m}"]
                loss = ce = masked_pixel_cross_entropy(logits, labels, ignore, axis_name=devices.AXIS)
                if config.loss.dice_weight:  # background vs foreground
                    p0 = jax.nn.softmax(logits)[..., 0]
                    dice = soft_dice_loss(jnp.stack([p0, 1 - p0], -1), labels > 0, ~ignore, axis_name=devices.AXIS)
                    loss, metrics[f"dice_{m}"] = ce + config.loss.dice_weight * dice, dice
                total, stats[m], metrics[f"ce_{m}"] = total + loss, updates["batch_stats"], ce
            return total, (stats, metrics)

        (loss, (stats, metrics)), grads = devices.value_and_mean_grad(loss_fn, state.params)
        return state.apply_gradients(grads, stats), {"loss": loss, **metrics}

    return step


# --- stages --------------------------------------------------------------------------------------
SHARED_KEYS = ("seed", "data.name", "data.builder_config", "data.train_split", "data.max_train_examples",
               "labels", "models", "loss", "optimizer", "train.batch_size")


def stage_steps(config, name: str) -> int:
    return config.train.steps[name if name in STEP_KEYS else "round"]


def stage_fingerprint(config, name: str) -> dict:
    keys = [*SHARED_KEYS, f"train.steps.{name if name in STEP_KEYS else 'round'}"]
    if name not in STEP_KEYS:  # a round reads round 0 and the rounds before it
        keys += ["train.steps.round0", "train.steps.round"] + ["fusion"] * (not name.startswith("ellipse"))
    return config_fingerprint(config, keys)


def initial_variables(config, model: str) -> dict:
    """The initial variables of model 'a' or 'b', the same in every arm (a controlled comparison)."""
    key = jax.random.fold_in(loop.seed_key(config.seed), 1 + (model == "b"))
    init = jax.jit(functools.partial(build_unet(config, model, train=False).init, train=False))
    size = cell_sets.image_size(config.data)
    return jax.device_get(init(key, jnp.zeros((1, size, size, 1), jnp.uint8)))


def probs_fn(config, model: str, classes: bool = False):
    """Predict function of model 'a' or 'b': {'probs' [B, H, W, 3]}, or {'classes' [B, H, W] uint8}."""
    net = build_unet(config, model, train=False)
    def predict(variables, batch):
        logits = net.apply(variables, batch["image"], train=False)
        return {"classes": jnp.argmax(logits, -1).astype(jnp.uint8)} if classes else {"probs": jax.nn.softmax(logits)}
    return predict


def predictors(config, mesh, make):
    """(model, variables) -> a `Predictor` of make(config, model) set to `variables`, compiled once per model."""
    made: dict = {}

    def get(model: str, variables):
        if model not in made:
            made[model] = Predictor(make(config, model), variables, mesh or devices.make_mesh(), config.eval.batch_size)
        made[model].set_variables(variables)
        return made[model]
    return get


def make_stages(config, data: dict) -> list[Stage]:
    train, R = data["train"].arrays, config.rounds
    rule = dict(config.fusion.to_dict(), kind=config.labels.shape)
    predict, initial = predictors(config, None, probs_fn), {}  # initial variables: made once per model
    predicted: dict = {}  # (stage, model) -> fused labels; deterministic, so a resumed round gets the same ones

    def fused(load, stage: str, model: str):
        if (stage, model) not in predicted:
            probs = cell_sets.predict_probs(predict(model, load(stage)[model]), train["image"], config.eval.tile,
                                            config.eval.tile_margin, 2 ** (len(config.models[model]["widths"]) - 1))
            predicted[stage, model] = box_labels.fuse_split(train["weak"], train["weak_ignore"], train["boxes"],
                                                            train["num_cells"], probs, **rule)
        return predicted[stage, model]

    def batches(labels: dict):  # {model: (labels, ignore)}; folder data: random crops of the whole images
        arrays = {f"{k}_{m}": v for m, pair in labels.items() for k, v in zip(("label", "ignore"), pair)}
        return cell_sets.train_batches(config.data, train, arrays, config.train.batch_size, config.seed)

    def stage(name, models, labels, start=None):  # labels: a BatchSource, or load -> BatchSource (rounds)
        def init(rng, load):
            return {m: load(start)[m] if start else initial.get(m) or initial.setdefault(
                m, initial_variables(config, m)) for m in models}
        return Stage(name=name, init=init, step=make_step(config, models),
                     optimizers=dict.fromkeys(models, make_optimizer(config.optimizer, stage_steps(config, name))),
                     data=labels, num_steps=stage_steps(config, name), fingerprint=stage_fingerprint(config, name))

    weak, none = (train["weak"], train["weak_ignore"]), np.zeros_like(train["weak_ignore"])
    stages = [stage("boxes", ("a",), batches({"a": (train["box"], train["box_ignore"])})),
              stage("full", ("a",), batches({"a": (train["gt"], none)})),
              stage("round0", ("a", "b"), batches({"a": weak, "b": weak}))]
    for n in range(1, R + 1):
        prev = {arm: "round0" if n == 1 else f"{arm}_r{n - 1}" for arm in ARMS}
        stages.append(stage(f"ellipse_r{n}", ("a",), batches({"a": weak}), start=prev["ellipse"]))
        stages.append(stage(f"self_r{n}", ("a",), lambda load, p=prev["self"]: batches({"a": fused(load, p, "a")}),
                            start=prev["self"]))
        stages.append(stage(f"mutual_r{n}", ("a", "b"), lambda load, p=prev["mutual"]: batches(
            {"a": fused(load, p, "b"), "b": fused(load, p, "a")}), start=prev["mutual"]))
    final = f"mutual_r{R}"
    return stages + [Stage(name="final", derive=lambda load, mesh: ({"segmenter": load(final)["a"]}, {"from": final}),
                           fingerprint=stage_fingerprint(config, final))]


# --- evaluation ----------------------------------------------------------------------------------
def reported_models(config) -> dict:
    """{(arm, round, model): stage} of every row: round 0 (shared by all box-supervised arms) once."""
    R = config.rounds
    out = {("round 0: ellipse labels", 0, m): "round0" for m in ("a", "b")}
    for arm in ARMS:
        out.update({(ARM_NAMES[arm], n, m): f"{arm}_r{n}" for n in range(1, R + 1)
                    for m in (("a", "b") if arm == "mutual" else ("a",))})
    return {("boxes as masks", R, "a"): "boxes", **out, ("fully supervised", R, "a"): "full"}


def evaluate(config, store, data: dict, mesh, out_dir: str) -> Report:
    """Every arm and round on the eval split; the claim (final round): mutual > self-training > ellipse only."""
    test, R = data["test"].arrays, config.rounds
    rows_of, images, get = reported_models(config), ArraySource({"image": test["image"]}), predictors(
        config, mesh, functools.partial(probs_fn, classes=True))
    classes, metrics, params = {}, {}, {}
    for s, m in dict.fromkeys((s, m) for (_, _, m), s in rows_of.items()):  # each model once
        variables = store.load(s)[m]
        classes[s, m], params[m] = get(m, variables).predict_split(images)["classes"], param_count(variables["params"])
        metrics[s, m] = segmentation_metrics(classes[s, m], test["instances"])
    speed = {m: get(m, store.load("round0")[m]).throughput({"image": test["image"][:config.eval.batch_size]},
                                                            repeats=5) for m in ("a", "b")}
    full_ap, rows = metrics["full", "a"]["ap"], []
    for (arm, n, m), s in rows_of.items():
        x = metrics[s, m]
        rows.append({"arm": arm, "round": n, "model": m, "stage": s, "params": params[m], "fg IoU": x["fg_iou"],
                     "Dice": x["dice"], "mean inst IoU": x["mean_iou"], "AP@[.5:.95]": x["ap"],
                     "AP % of full": 100 * x["ap"] / max(full_ap, 1e-9)})
    final = {arm: metrics[f"{arm}_r{R}", "a"]["ap"] for arm in ARMS}
    mutual_mean = (final["mutual"] + metrics[f"mutual_r{R}", "b"]["ap"]) / 2
    holds = bool(final["mutual"] > final["self"] > final["ellipse"])
    oracle = {k: segmentation_metrics(test[k], test["instances"])["ap"] for k in ("weak", "box", "gt")}
    if jax.process_index() == 0:
        _plots(config, out_dir, metrics, test, classes[f"mutual_r{R}", "a"])
    notes = [f"Seed 002 (round {R}, model a, the same initial weights in every arm): mutual > self > ellipse "
             f"{'holds' if holds else 'does NOT hold'} on this seed (mutual a/b mean {mutual_mean:.4f}). Full {full_ap:.4f}.",
             f"Labels scored as predictions: {config.labels.shape} {oracle['weak']:.4f}, boxes {oracle['box']:.4f}, "
             f"ground-truth classes {oracle['gt']:.4f} (the decoding's ceiling: a nucleus without interior is lost). "
             f"Split {config.data.eval_split!r}, {len(test['image'])} images; {devices.describe(mesh)}."]
    source = config.data.path if config.data.name == "folder" else f"synthetic_cells/{config.data.builder_config}"
    return Report(title=f"Mutual cross-supervision from boxes, {source}",
                  columns=list(rows[0]), rows=rows, notes=notes, extra={"images_per_s": speed}, summary={
                      "final_ap": final, "mutual_mean_ap": mutual_mean, "full_ap": full_ap, "claim_holds": holds,
                      "label_ap": oracle})


def _plots(config, out_dir: str, metrics: dict, test: dict, mutual: np.ndarray) -> None:
    """ap_per_round.png, fg_iou_per_round.png (per round per arm) and overlays.png."""
    from jaxface.evaluation import plots  # matplotlib only where figures are drawn

    R = list(range(config.rounds + 1))
    for key, label in (("ap", "instance AP"), ("fg_iou", "foreground IoU")):
        series = {ARM_NAMES[a]: (R, [metrics["round0" if n == 0 else f"{a}_r{n}", "a"][key] for n in R]) for a in ARMS}
        series.update({ARM_NAMES[s]: (R, [metrics[s, "a"][key]] * len(R)) for s in ("boxes", "full")})
        plots.save_curves(os.path.join(out_dir, f"{key}_per_round.png"), series, ylabel=label,
                          title=f"{label} per round (x axis: round; boxes / full: final models)")
    maps = {"weak label (grey: ignore)": np.where(test["weak_ignore"], 3, test["weak"]), "mutual prediction": mutual,
            "ground truth": test["gt"]}
    save_overlays(os.path.join(out_dir, "overlays.png"), test["image"], maps, config.eval.num_overlays,
                  title="green: interior, red: boundary")


# --- what the core and experiments/ read ---------------------------------------------------------
def CLAIMS(config):  # seed 002 at the last round, model a; judged by the core over seeds (config.num_seeds)
    last = lambda arm: {"stage": f"{arm}_r{config.rounds}", "model": "a"}  # noqa: E731
    return (Claim(last("mutual"), last("self"), "AP@[.5:.95]", "(seed 002) mutual beats self-training"),
            Claim(last("self"), last("ellipse"), "AP@[.5:.95]", "self-training beats ellipse labels only"))


LOSS_CURVE = ("loss",)
EXPORT = ("final", "segmenter")  # mutual's model a after the last round
SAVED_IMAGES = ("mask",)  # experiments.predict writes them without --image_dir, into <workdir>/predictions/
READ_IMAGES = {"max_side": None, "percentiles": cell_folder.PERCENTILES}  # full size, 16-bit as in training


def input_format(config) -> dict:
    return {"image": {"shape": [cell_sets.image_size(config.data)] * 2 + [1], "dtype": "uint8", "range": [0, 255],
                      "layout": "HWC, grayscale (any H, W: the U-Net is fully convolutional)"}}


def predict_images(config, workdir: str, images: list) -> list[dict]:
    """Instances in each RGB uint8 image [H, W, 3] of any size (the channels' mean, edge-padded to a multiple
    of the U-Net's stride; larger than config.eval.tile: overlapping tiles stitched, `evaluation.tiling`):
    [{'instances', 'foreground_fraction', 'mask' [H, W] int32 (0 background, k instance k)}]."""
    variables = checkpoints.load_exported(workdir, EXPORT[0], [EXPORT[1]])[EXPORT[1]]
    apply, factor, out = jax.jit(probs_fn(config, "a")), 2 ** (len(config.models.a["widths"]) - 1), []
    tile = max(config.eval.tile, 2 * config.eval.tile_margin + factor)
    for image in images:
        (h, w), gray = image.shape[:2], np.asarray(image, np.float32).mean(-1).round().astype(np.uint8)
        padded = np.pad(gray, ((0, max(-h % factor, tile - h)), (0, max(-w % factor, tile - w))), mode="edge")
        classes = predict_tiled(lambda x: apply(variables, {"image": x})["probs"], padded[..., None], tile,
                                config.eval.tile_margin, align=factor).argmax(-1)[:h, :w]
        mask = instances_from_classes(classes).astype(np.int32)
        out.append({"instances": int(mask.max()), "foreground_fraction": round(float((classes > 0).mean()), 4),
                    "mask": mask})
    return out
