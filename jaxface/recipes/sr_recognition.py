"""Joint super-resolution + face recognition, cascaded into one model (seed 001, claims 1-7).

Each face x (HR) is degraded per example (`jaxface.data.degradations`) to lr, lr_up = bicubic(lr) at HR size.
Batches hold P identities x K images (`IdentityBalancedBatches`), the same batches for every arm. Losses
(the pair loss over the GLOBAL batch of all devices, `jaxface.losses.pairwise_margin_loss`):
  L_rec(SR)   = mean |SR(lr) - x|  (reconstruction 'l1')  or  mean (SR(lr) - x)^2  ('l2'), images in [0, 1]
  L_id(R; S)  = sum_{i<j} l_ij / (n (n-1) / 2) over the n embeddings e = R(S), S the merged image sets,
                l_ij = d_ij^2 for the same identity, max(0, m - d_ij)^2 otherwise, d_ij = ||e_i - e_j||_2
Arms (stages): hr_only (a) recognizer R on L_id(R; {x}), hr_lr (b) on L_id(R; {x, lr_up}), both tested on lr_up;
  joint      (c)  the seed: per step SR <- SR - grad L_rec, then with the updated SR's output r = SR(lr)
                  (no gradient into SR) R <- R - grad L_id(R; {x, lr_up, r}); tested as the cascade R(SR(lr))
  joint_e2e  (d)  as (c), but SR follows L_rec + lambda L_id(R; {x, lr_up, SR(lr)}) (the identity loss flows
                  into SR, lambda = config.loss.identity_into_sr)
  cascade    derived (claim 6): SR -> R of the arm `config.cascade_from`, one exported model (EXPORT).
Evaluation on unseen identities (`jaxface.evaluation.verification`): 10-fold verification (LR-LR, LR probe vs
HR gallery, HR-HR), TAR at FAR and ROC on all LR-LR pairs, PSNR / SSIM of SR vs bicubic, images/s.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxface.data import degradations as deg
from jaxface.data import synthetic_faces as sf
from jaxface.data import face_identities as fi
from jaxface.data.images import resize_images
from jaxface.data.pipeline import ArraySource, check_dataset_name, ordered_batches
from jaxface.data.samplers import IdentityBalancedBatches
from jaxface.evaluation import verification as vf
from jaxface.losses import pairwise_margin_loss
from jaxface.losses.reconstruction import reconstruction_loss
from jaxface.models.common import param_count
from jaxface.models.recognition import Cascade, FaceEmbedder, cascade_variables
from jaxface.models.super_resolution import SR_KINDS, build_sr, to_unit
from jaxface.train import checkpoints, devices, loop
from jaxface.train.driver import Claim, Report
from jaxface.train.optimizers import make_optimizer
from jaxface.train.predict import Predictor
from jaxface.train.stages import Stage, config_fingerprint

ARMS = {"(a) HR only": "hr_only", "(b) HR + LR, no SR": "hr_lr", "(c) joint SR + recognizer (seed)": "joint",
        "(d) joint, identity loss into SR": "joint_e2e"}
TRAINED = tuple(ARMS.values())
JOINT = ("joint", "joint_e2e")
EXPORT = ("cascade", "cascade")
A, B, C, _ = ARMS  # what seed 001 claims, judged by the core over seeds (config.num_seeds)
CLAIMS = (Claim(C, B, "LR-LR acc %", "(seed 001) the joint cascade beats the recognizer trained on HR + LR"),
          Claim(C, A, "LR-LR acc %", "the joint cascade beats the recognizer trained on HR only"))


# --- configuration and models --------------------------------------------------------------------
def validate_config(config) -> None:
    """One clear line per problem; called before anything is written."""
    loop.validate_train_config(config, TRAINED)
    check_dataset_name(config.data.name, fi.DATASETS)
    c, factor, lfw = config, deg.Degradation.from_config(config.degradation).factor, config.data.name == "lfw"
    ids = sf.CONFIGS[c.data.builder_config].num_train_identities if c.data.builder_config in sf.CONFIGS else 0
    size, k, kind, dtype = c.data.image_size, c.train.images_per_identity, c.model.sr.kind, c.model.compute_dtype
    rules = [  # (key, value, whether it is allowed, what is allowed)
        ("data.builder_config", c.data.builder_config, lfw or ids > 0, ", ".join(sf.CONFIGS)),
        ("data.lfw_crop", c.data.lfw_crop, 32 <= c.data.lfw_crop <= fi.LFW_FRAME, f"[32, {fi.LFW_FRAME}]"),
        ("data.image_size", size, 8 <= size <= 512 and size % factor == 0,
         f"[8, 512] and divisible by config.degradation.factor={factor}"),
        ("data.val_identities", c.data.val_identities, lfw or 2 <= c.data.val_identities < ids, f"[2, {ids - 1}]"),
        ("train.images_per_identity", k, isinstance(k, int) and k >= 2 and c.train.batch_size % k == 0,
         f"an integer >= 2 dividing config.train.batch_size={c.train.batch_size}"),
        ("model.sr.kind", kind, kind in SR_KINDS, ", ".join(SR_KINDS)),
        ("model.compute_dtype", dtype, dtype in ("float32", "bfloat16"), "float32, bfloat16"),
        ("loss.reconstruction", c.loss.reconstruction, c.loss.reconstruction in ("l1", "l2"), "l1, l2"),
        ("loss.margin", c.loss.margin, c.loss.margin > 0, "a number > 0"),
        ("loss.identity_into_sr", c.loss.identity_into_sr, c.loss.identity_into_sr >= 0, "a number >= 0"),
        ("cascade_from", c.cascade_from, c.cascade_from in JOINT, ", ".join(JOINT)),
        ("eval.num_folds", c.eval.num_folds, c.eval.num_folds >= 2, "an integer >= 2")]
    for key, value, ok, allowed in rules:
        if not ok:
            raise ValueError(f"config.{key}={value!r}; allowed: {allowed}")


def build_sr_net(config):
    return build_sr(**config.model.sr.to_dict(), factor=config.degradation.factor,
                    dtype=jnp.dtype(config.model.compute_dtype))


def build_recognizer(config, *, train: bool) -> FaceEmbedder:
    """`train=True` syncs BatchNorm statistics across devices."""
    return FaceEmbedder(**config.model.recognizer.to_dict(), dtype=jnp.dtype(config.model.compute_dtype),
                        bn_axis_name=devices.batch_norm_axis(train))


# --- data ----------------------------------------------------------------------------------------
def load_data(config) -> dict:
    """{'train': HR faces of the training identities, 'val' and 'test' (identities never trained on,
    `face_identities.identity_splits`) with their fixed degradations 'lr', 'lr_up'}."""
    devices.main_process_first(lambda: fi.prepare(config.data))
    splits = fi.identity_splits(config.data)
    out, degradation = {"train": ArraySource(splits["train"])}, deg.Degradation.from_config(config.degradation)
    for i, name in enumerate(("val", "test")):
        if name == "test" and splits["test"] is splits["val"]:  # data.eval_split='validation': degraded once
            out["test"] = out["val"]
        else:
            out[name] = ArraySource({**splits[name], **deg.degrade_split(splits[name]["image"], degradation,
                                                                         config.seed, deg.EVAL_STEP + i)})
    return out


# --- per-device step functions -------------------------------------------------------------------
def make_step(config, arm: str):
    """One step of `arm` (module docstring): (c), (d) first update SR on L_rec (+ lambda L_id for (d)), then
    every arm updates R on L_id over its merged sets, the joint arms with the updated SR's output."""
    sr, net, margin = build_sr_net(config), build_recognizer(config, train=True), config.loss.margin
    into_sr = config.loss.identity_into_sr if arm == "joint_e2e" else 0.0

    def identity_loss(params, stats, images, ids):
        emb, updates = net.apply({"params": params, "batch_stats": stats}, jnp.concatenate(images), train=True,
                                 mutable=["batch_stats"])
        loss = pairwise_margin_loss(emb, jnp.tile(ids, len(images)), margin, axis_name=devices.AXIS)
        return loss, updates["batch_stats"]

    def step(state, frozen, batch, rng):
        hr, up, lr, ids = to_unit(batch["image"]), to_unit(batch["lr_up"]), batch["lr"], batch["identity"]
        rec_params, rec_stats = state.params["recognizer"], state.batch_stats["recognizer"]
        images, metrics = [hr, up][:1 if arm == "hr_only" else 2], {}
        if arm in JOINT:
            def sr_loss(p):
                restored = sr.apply({"params": p}, lr)
                rec = reconstruction_loss(restored, hr, config.loss.reconstruction)
                ident = identity_loss(rec_params, rec_stats, [hr, up, restored], ids)[0] if into_sr else 0.0
                return rec + into_sr * ident, {"reconstruction": rec} | ({"identity_into_sr": ident} if into_sr else {})

            (_, metrics), grads = devices.value_and_mean_grad(sr_loss, state.params["sr"])
            state = state.apply_gradients({"sr": grads})
            images.append(jax.lax.stop_gradient(sr.apply({"params": state.params["sr"]}, lr)))
        (ident, stats), grads = devices.value_and_mean_grad(identity_loss, rec_params, rec_stats, images, ids)
        state = state.apply_gradients({"recognizer": grads}, {"recognizer": stats})
        return state, {"loss": ident + metrics.get("reconstruction", 0.0), "identity": ident, **metrics}

    return step


# --- stages --------------------------------------------------------------------------------------
SHARED_KEYS = ("seed", "data.name", "data.builder_config", "data.train_split", "data.image_size",
               "data.val_identities", "data.lfw_crop", "data.max_train_examples", "degradation", "model.recognizer",
               "model.compute_dtype", "train.batch_size", "train.images_per_identity", "optimizer", "loss.margin")


def stage_fingerprint(config, name: str) -> dict:
    """The config values that shape stage `name` (`Stage.fingerprint`)."""
    keys = [*SHARED_KEYS, f"train.steps.{name}"]
    if name in JOINT:
        keys += ["model.sr", "loss.reconstruction"] + ["loss.identity_into_sr"] * (name == "joint_e2e")
    return config_fingerprint(config, keys)


def init_variables(config, model: str) -> dict:
    """Initial variables of 'sr' or 'recognizer', the same for every arm (a controlled comparison)."""
    size, low = config.data.image_size, config.data.image_size // config.degradation.factor
    key = jax.random.fold_in(loop.seed_key(config.seed), 1 + (model == "sr"))
    net = build_sr_net(config) if model == "sr" else build_recognizer(config, train=False)
    init = jax.jit(net.init if model == "sr" else functools.partial(net.init, train=False))
    return jax.device_get(init(key, jnp.zeros((1, low, low, 3) if model == "sr" else (1, size, size, 3), jnp.uint8)))


def make_stages(config, data: dict) -> list[Stage]:
    train, k = data["train"], config.train.images_per_identity
    augment = deg.make_augment(deg.Degradation.from_config(config.degradation))  # the same batches for every arm
    batches = IdentityBalancedBatches(train, train.arrays["identity"], identities_per_batch=config.train.batch_size
                                      // k, images_per_identity=k, seed=config.seed, augment=augment)
    initial: dict = {}  # made on first use, shared by every stage (one compilation each)
    init = lambda rng, load, models: {m: initial[m] if m in initial else  # noqa: E731
                                      initial.setdefault(m, init_variables(config, m)) for m in models}

    stages = []
    for name in TRAINED:
        models, num_steps = ("sr", "recognizer") if name in JOINT else ("recognizer",), config.train.steps[name]
        stages.append(Stage(name=name, init=functools.partial(init, models=models), step=make_step(config, name),
                            optimizers=dict.fromkeys(models, make_optimizer(config.optimizer, num_steps)), data=batches,
                            num_steps=num_steps, fingerprint=stage_fingerprint(config, name)))

    def compose(load, mesh):  # claim 6: the SR model's output end connected to the recognizer's input
        return {"cascade": cascade_variables(**load(config.cascade_from))}, {"from": config.cascade_from}

    fingerprint = {**stage_fingerprint(config, config.cascade_from), **config_fingerprint(config, ["cascade_from"])}
    return stages + [Stage(name="cascade", derive=compose, fingerprint=fingerprint)]


# --- evaluation ----------------------------------------------------------------------------------
def recognizer_predict(config):
    net = build_recognizer(config, train=False)
    return lambda variables, batch: {"embedding": net.apply(variables, batch["image"], train=False)}


def cascade_predict(config):  # lr -> {'embedding', 'restored'}
    model = Cascade(sr=build_sr_net(config), recognizer=build_recognizer(config, train=False))
    return lambda variables, batch: model.apply(variables, batch["lr"])


def arm_outputs(config, store, split: ArraySource, mesh) -> tuple[dict, Predictor]:
    """({stage: {'hr', 'lr' embeddings, 'restored' uint8 (joint arms), 'params', 'images/s'}}, the cascade's
    predictor): arms (a), (b) read lr_up, the joint arms run the cascade on lr."""
    bs, (first, _) = config.eval.batch_size, next(ordered_batches(split, config.eval.batch_size))
    rec, casc, out = None, None, {}
    for stage in TRAINED:
        models = store.load(stage)
        rec = rec or Predictor(recognizer_predict(config), models["recognizer"], mesh, bs)
        rec.set_variables(models["recognizer"])
        o = out[stage] = {"hr": rec.predict_split(split, transform=lambda b: {"image": b["image"]})["embedding"],
                          "params": sum(param_count(v["params"]) for v in models.values())}
        if stage in JOINT:
            variables = cascade_variables(models["sr"], models["recognizer"])
            casc = casc or Predictor(cascade_predict(config), variables, mesh, bs)
            casc.set_variables(variables)
            found = casc.predict_split(split, transform=lambda b: {"lr": b["lr"]})
            o.update({"lr": found["embedding"], "images/s": casc.throughput({"lr": first["lr"]}),
                      "restored": np.round(np.clip(found["restored"], 0, 1) * 255).astype(np.uint8)})
        else:
            o.update({"lr": rec.predict_split(split, transform=lambda b: {"image": b["lr_up"]})["embedding"],
                      "images/s": rec.throughput({"image": first["lr_up"]})})
    return out, casc


def evaluate(config, store, data: dict, mesh, out_dir: str) -> Report:
    """Every arm on the data.eval_split identities, the claim ((c) beats (a) and (b) on LR-LR), the verify threshold."""
    test, val, e = data["test"], data["val"], config.eval
    ids, hr_images = test.arrays["identity"], test.arrays["image"]
    outputs, cascade = arm_outputs(config, store, test, mesh)
    bicubic = (vf.psnr(test.arrays["lr_up"], hr_images), vf.ssim(test.arrays["lr_up"], hr_images))
    rows, found = [], {}
    for arm, stage in ARMS.items():
        o = outputs[stage]
        v = found[stage] = vf.verify_pair_types(o["hr"], o["lr"], ids, num_folds=e.num_folds, fars=e.far,
                                                seed=config.seed)
        quality = (vf.psnr(o["restored"], hr_images), vf.ssim(o["restored"], hr_images)) if stage in JOINT else bicubic
        rows.append({"arm": arm, "params": o["params"], "images/s": o["images/s"], **vf.table_columns(v, e.far),
                     "PSNR dB": quality[0], "SSIM": quality[1]})
        logging.info("%s", rows[-1])
    cascade.set_variables(store.load("cascade")["cascade"])  # predict --verify's threshold, on validation identities
    verify = vf.validation_threshold(cascade.predict_split(val, transform=lambda b: {"lr": b["lr"]})["embedding"],
                                     val.arrays["identity"], config.seed)
    if jax.process_index() == 0:
        _plots(config, out_dir, found, test, outputs)
    (c, c_std), (best, spread) = [max((r["LR-LR acc %"], r["LR-LR ±"]) for r in group)
                                  for group in (rows[2:3], rows[:2])]  # (c); the better of (a), (b)
    gap, negatives = c - best, found["joint"]["tar"][str(e.far[0])]["negatives"]
    verdict = "does NOT hold" if gap <= 0 else "holds" if gap > max(spread, c_std) else "holds, inside the fold std"
    notes = [f"Seed 001 claim: on LR-LR verification the cascade (c) beats (a) and (b): {c:.2f} % vs {best:.2f} % "
             f"(gap {gap:+.2f} points; fold std {c_std:.2f} / {spread:.2f}) -> {verdict}.",
             f"{len(np.unique(ids))} {config.data.eval_split} identities never trained on, {len(ids)} images; "
             f"{e.num_folds}-fold accuracy ± std over folds; TAR on all LR-LR pairs ({negatives} negatives: FAR < "
             f"1/{negatives} not resolvable); PSNR/SSIM of (a), (b) are bicubic's; images/s from the LR input, "
             f"batch {e.batch_size}, {devices.describe(mesh)}. Verify threshold (validation identities, cascade from "
             f"{config.cascade_from}): {verify['threshold']:.4f} ({100 * verify['accuracy']:.2f} % there)."]
    return Report(
        title=f"Joint SR + recognition, {config.data.name}/{config.data.builder_config}, "
              f"{config.data.image_size}px HR, {config.degradation.factor}x LR, {config.data.eval_split} identities",
        columns=list(rows[0]), rows=rows, notes=notes,
        summary={"lr_lr_gap_vs_best_baseline": gap, "claim_holds": bool(gap > 0),
                 "beyond_fold_std": bool(gap > max(spread, c_std))},
        extra={"verification": {s: {k: v for k, v in f.items() if k != "roc"} for s, f in found.items()},
               "verify": verify})


def _plots(config, out_dir: str, found: dict, test: ArraySource, outputs: dict) -> None:
    """roc_lr_lr.png (every arm) and sr_faces.png (LR / bicubic / SR / HR of one face per test identity)."""
    from jaxface.evaluation import plots  # matplotlib only where figures are drawn

    vf.save_roc(os.path.join(out_dir, "roc_lr_lr.png"), {arm: found[s]["roc"] for arm, s in ARMS.items()},
                title=f"LR-LR verification ROC ({config.data.eval_split} identities)")
    a, ids, f = test.arrays, test.arrays["identity"], config.degradation.factor
    panels, captions = [], []
    for i in [int(np.flatnonzero(ids == k)[0]) for k in np.unique(ids)[:config.eval.num_sample_faces]]:
        panels += [np.repeat(np.repeat(a["lr"][i], f, axis=0), f, axis=1), a["lr_up"][i],
                   outputs[config.cascade_from]["restored"][i], a["image"][i]]
        captions += [f"{name}, id {ids[i]}" for name in ("LR", "bicubic", "SR", "HR")]
    plots.save_captioned_grid(os.path.join(out_dir, "sr_faces.png"), np.stack(panels), captions,
                              max_images=len(panels), title=f"test faces: LR, bicubic, SR ({config.cascade_from}), HR")


# --- inference on image files (experiments/predict.py) ------------------------------------------
def input_format(config) -> dict:
    low = config.data.image_size // config.degradation.factor
    return {"lr": {"shape": [low, low, 3], "dtype": "uint8", "range": [0, 255], "layout": "HWC, RGB"}}


def predict_images(config, workdir: str, images: list) -> list[dict]:
    """Each RGB uint8 image [H, W, 3] (centred square, resized to the cascade's LR input) through the
    exported cascade: [{'embedding_norm', 'embedding' [E] (5 decimals), 'restored': the SR image uint8}]."""
    variables = checkpoints.load_exported(workdir, EXPORT[0], [EXPORT[1]])[EXPORT[1]]
    apply, low, results = jax.jit(cascade_predict(config)), input_format(config)["lr"]["shape"][0], []
    for image in images:
        out = jax.device_get(apply(variables, {"lr": resize_images(np.asarray(image, np.uint8)[None], low)}))
        emb = np.asarray(out["embedding"][0], np.float64)
        results.append({"embedding_norm": round(float(np.linalg.norm(emb)), 5), "embedding": np.round(emb, 5).tolist(),
                        "restored": np.round(np.clip(out["restored"][0], 0, 1) * 255).astype(np.uint8)})
    return results
