"""Bare train steps for `experiments.bench`: each recipe's step written again as ONE plain `jax.jit`
function of the global batch, without the core (no shard_map, TrainState, collectives or control word):
the same linen modules (BatchNorm with bn_axis_name=None), the same loss functions without `axis_name`
(the program sees the whole batch, so the single-device normalisers apply) and the same optimizers from
`make_optimizer`. Given a batch split over several devices, `jax.jit` partitions it (GSPMD): the
data-parallel step a user would write without the core.

`BARE_STEPS[recipe](config, stage)` -> `Bare`, whose jitted `step(params, stats, opt_state, count, frozen,
batch) -> (params, stats, opt_state, count + 1, loss)` donates its first four arguments: {model: params},
{model: BatchNorm statistics} (models with BatchNorm only), {model: optax state} and the number of steps
taken (semi_distill's ramp-up reads it). `loss` is the value the core logs as `loss`. No recipe's step
reads its random key (augmentation happens on the host, in the batch sources), so none takes one.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from jaxface.data import face_attributes as fa
from jaxface.losses import (centernet_loss, feature_distillation_loss, global_ratio, head_distillation_loss,
                            kd_logit_loss, masked_pixel_cross_entropy, pairwise_margin_loss, soft_dice_loss)
from jaxface.losses.attributes import multi_head_attribute_loss
from jaxface.losses.reconstruction import reconstruction_loss
from jaxface.models.attributes import to_label_units
from jaxface.models.super_resolution import to_unit
from jaxface.recipes import distill, multitask, mutual, semi_distill, sr_recognition
from jaxface.train.optimizers import make_optimizer


@dataclasses.dataclass(frozen=True)
class Bare:
    step: Callable  # the jitted step of the module docstring
    optimizers: dict  # {model: optax transformation} of the models it trains

    def init(self, variables: dict) -> tuple[dict, dict, dict]:
        """{model: linen variables} -> (params, stats, opt_state) as `step` takes them."""
        params = {m: v["params"] for m, v in variables.items()}
        stats = {m: v["batch_stats"] for m, v in variables.items() if v.get("batch_stats")}
        return params, stats, {m: self.optimizers[m].init(p) for m, p in params.items()}


def _bare(config, stage, make_step) -> Bare:
    """make_step(optimizers) -> the step function; the stage's optimizers are built again from the config."""
    optimizers = {m: make_optimizer(config.optimizer, stage.num_steps, m) for m in stage.optimizers}
    return Bare(jax.jit(make_step(optimizers), donate_argnums=(0, 1, 2, 3)), optimizers)


def _update(optimizers, params, opt_state, grads):
    """One optax update of each model in `grads`; the other models are returned as they are."""
    params, opt_state = dict(params), dict(opt_state)
    for m, g in grads.items():
        updates, opt_state[m] = optimizers[m].update(g, opt_state[m], params[m])
        params[m] = optax.apply_updates(params[m], updates)
    return params, opt_state


def _descend(loss_fn, optimizers, params, opt_state, count):
    """loss_fn(params) -> (loss, new BatchNorm statistics); one gradient step of every model in `params`:
    the bare step's return value (params, stats, opt_state, count + 1, loss)."""
    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    params, opt_state = _update(optimizers, params, opt_state, grads)
    return params, stats, opt_state, count + 1, loss


def _apply_train(net, params, stats, images):  # -> (outputs, new BatchNorm statistics)
    out, updates = net.apply({"params": params, "batch_stats": stats}, images, train=True, mutable=["batch_stats"])
    return out, updates["batch_stats"]


def distill_step(config, stage) -> Bare:
    """Mirrors `distill.make_kd_step` (student_kd_big / _hr / _both: task loss + (1/T) sum over the teachers
    of feature and head terms) and, with no teachers, `make_detector_step` (teacher_big, teacher_hr, student)."""
    model, teachers, w = distill.MODEL_OF[stage.name], distill.KD_STAGES.get(stage.name, ()), config.loss
    net = distill.build_detector(config, model, train=False)
    teacher_nets = {t: distill.build_detector(config, f"teacher_{t}", train=False) for t in teachers}
    adapters = {t: distill.build_adapter(config, t) for t in teachers}

    def make_step(optimizers):
        def step(params, stats, opt_state, count, frozen, batch):
            teacher_out = {t: teacher_nets[t].apply(frozen[t], batch[distill.IMAGE_KEY[f"teacher_{t}"]], train=False)
                           for t in teachers}

            def loss_fn(p):
                out, new_stats = _apply_train(net, p[model], stats[model], batch[distill.IMAGE_KEY[model]])
                loss, _ = centernet_loss(out["heads"], batch, wh_weight=w.wh_weight, offset_weight=w.offset_weight)
                for t in teachers:
                    adapted = adapters[t].apply({"params": p[f"adapter_{t}"]}, out["features"])
                    feat = feature_distillation_loss(adapted, teacher_out[t]["features"])
                    head, _ = head_distillation_loss(out["heads"], teacher_out[t]["heads"], batch["mask"],
                                                     heatmap_weight=w.kd_heatmap_weight, wh_weight=w.wh_weight,
                                                     offset_weight=w.offset_weight)
                    loss += (w[f"feature_weight_{t}"] * feat + w[f"head_weight_{t}"] * head) / len(teachers)
                return loss, new_stats

            params, new_stats, opt_state, count, loss = _descend(loss_fn, optimizers, params, opt_state, count)
            return params, {model: new_stats}, opt_state, count, loss
        return step

    return _bare(config, stage, make_step)


def multitask_step(config, stage) -> Bare:
    """Mirrors `multitask.make_step` for any stage of `multitask.stage_models` (stage3: every head and the
    decoupling module): the sum over the stage's models of their masked multi-head attribute losses."""
    models, scales = multitask.stage_models(config)[stage.name], fa.regression_scales(config.data.name)
    nets = {m: multitask.build_net(config, heads, decoupling=d, train=False) for m, (heads, d) in models.items()}

    def make_step(optimizers):
        def step(params, stats, opt_state, count, frozen, batch):
            def loss_fn(p):
                total, new_stats = 0.0, {}
                for m, (heads, _) in models.items():
                    out, new_stats[m] = _apply_train(nets[m], p[m], stats[m], batch["image"])
                    loss, _ = multi_head_attribute_loss(
                        to_label_units(out, scales), {h: batch[h] for h in heads},
                        {h: batch[f"mask_{h}"] for h in heads}, {h: config.loss.weights[h] for h in heads},
                        regression_scales={h: scales[h] for h in heads if h in scales},
                        huber_delta=config.loss.huber_delta)
                    total += loss
                return total, new_stats

            return _descend(loss_fn, optimizers, params, opt_state, count)
        return step

    return _bare(config, stage, make_step)


def mutual_step(config, stage) -> Bare:
    """Mirrors `mutual.make_step` for any trained stage (mutual_r<n>: models a and b, each on the weak labels
    fused with the other's predictions, batch['label_<m>'] / ['ignore_<m>']): masked pixel cross-entropy
    (+ dice_weight x soft Dice of the foreground) summed over the stage's models."""
    models = tuple(stage.optimizers)
    nets = {m: mutual.build_unet(config, m, train=False) for m in models}

    def make_step(optimizers):
        def step(params, stats, opt_state, count, frozen, batch):
            def loss_fn(p):
                total, new_stats = 0.0, {}
                for m in models:
                    logits, new_stats[m] = _apply_train(nets[m], p[m], stats[m], batch["image"])
                    labels, ignore = batch[f"label_{m}"], batch[f"ignore_{m}"]
                    loss = masked_pixel_cross_entropy(logits, labels, ignore)
                    if config.loss.dice_weight:
                        p0 = jax.nn.softmax(logits)[..., 0]
                        loss += config.loss.dice_weight * soft_dice_loss(jnp.stack([p0, 1 - p0], -1), labels > 0,
                                                                         ~ignore)
                    total += loss
                return total, new_stats

            return _descend(loss_fn, optimizers, params, opt_state, count)
        return step

    return _bare(config, stage, make_step)


def _nll(logits, labels):  # -log softmax(logits)[label] per example
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1)[:, 0]


def semi_distill_arm(config, stage_name: str) -> str:
    """The arm of a trained semi_distill stage: 'student_full' or '<arm>_<label fraction>'."""
    names = {semi_distill.FULL: semi_distill.FULL, **{f"{arm}_{f}": arm for arm in semi_distill.ARMS
                                                      for f in config.data.label_fractions}}
    return names[stage_name]


def semi_distill_step(config, stage) -> Bare:
    """Mirrors `semi_distill.make_step` for any arm (semi_kd_<f>: student and teacher trained together): per
    network CE on the labeled crops + r(t) (KD from the other network's weak views, the network's own on the
    unlabeled crops' strong views under loss.kd_view='strong' + PL on the strong views in semi_kd_pl), summed
    over the networks the arm trains; kd_offline reads the frozen teacher."""
    arm, w = semi_distill_arm(config, stage.name), config.loss
    trained = semi_distill.TRAINS.get(arm, ("student",))
    uses_unlabeled, pseudo = arm in ("kd_offline", *semi_distill.CO_ARMS), arm == "semi_kd_pl"
    strong_kd = uses_unlabeled and w.kd_view == "strong"
    nets = {m: semi_distill.build(config, m, train=False) for m in trained}
    frozen_teacher = semi_distill.build(config, "teacher", train=False)
    kd_weight = {"student": w.kd_weight, "teacher": w.kd_back_weight}

    def make_step(optimizers):
        def step(params, stats, opt_state, count, frozen, batch):
            x_l, y = batch["labeled/image"], batch["labeled/label"]
            unlabeled = ("unlabeled/image", "unlabeled/image_strong")[:uses_unlabeled + (pseudo or strong_kd)]
            views = [x_l] + [batch[k] for k in unlabeled]
            x, n_l, n_w = jnp.concatenate(views), x_l.shape[0], sum(v.shape[0] for v in views[:2])
            fixed = {"teacher": frozen_teacher.apply(frozen["teacher"], x[:n_w], train=False)} if frozen else {}
            ramp = jnp.exp(-5.0 * (1.0 - jnp.minimum(count / w.rampup_steps, 1.0)) ** 2) \
                if arm in semi_distill.CO_ARMS and w.rampup_steps else 1.0

            def loss_fn(p):
                logits, new_stats, total = {}, {}, 0.0
                for m in trained:
                    logits[m], new_stats[m] = _apply_train(nets[m], p[m], stats[m], x)
                for m in trained:
                    z = logits[m]
                    loss = w.ce_weight * global_ratio(jnp.sum(_nll(z[:n_l], y)), n_l)
                    other = {**fixed, **logits}.get("teacher" if m == "student" else "student")
                    if uses_unlabeled and other is not None:
                        own = jnp.concatenate([z[:n_l], z[n_w:]]) if strong_kd else z[:n_w]
                        loss += ramp * kd_weight[m] * kd_logit_loss(own, other[:n_w], w.temperature)
                    if pseudo:
                        source = z if w.pl_from == "own" else logits["teacher"]
                        q = jax.nn.softmax(jax.lax.stop_gradient(source[n_l:n_w]))
                        mask = (jnp.max(q, -1) >= w.pl_threshold).astype(jnp.float32)
                        pl = global_ratio(jnp.sum(mask * _nll(z[n_w:], q.argmax(-1))), n_w - n_l)
                        loss += ramp * w.pl_weight * pl
                    total += loss
                return total, new_stats

            return _descend(loss_fn, optimizers, params, opt_state, count)
        return step

    return _bare(config, stage, make_step)


def sr_recognition_step(config, stage) -> Bare:
    """Mirrors `sr_recognition.make_step` for any arm (joint, arm (c): SR updated on its reconstruction loss,
    then the recognizer on the pair loss over HR, bicubic and the updated SR's output; joint_e2e adds
    lambda x the pair loss to SR's loss; hr_only / hr_lr train the recognizer alone)."""
    arm, margin = stage.name, config.loss.margin
    sr, net = sr_recognition.build_sr_net(config), sr_recognition.build_recognizer(config, train=False)
    into_sr = config.loss.identity_into_sr if arm == "joint_e2e" else 0.0

    def identity_loss(params, stats, images, ids):
        emb, new_stats = _apply_train(net, params, stats, jnp.concatenate(images))
        return pairwise_margin_loss(emb, jnp.tile(ids, len(images)), margin), new_stats

    def make_step(optimizers):
        def step(params, stats, opt_state, count, frozen, batch):
            hr, up, lr, ids = to_unit(batch["image"]), to_unit(batch["lr_up"]), batch["lr"], batch["identity"]
            images, rec = [hr, up][:1 if arm == "hr_only" else 2], 0.0
            if arm in sr_recognition.JOINT:
                def sr_loss(p):
                    restored = sr.apply({"params": p}, lr)
                    rec = reconstruction_loss(restored, hr, config.loss.reconstruction)
                    ident = identity_loss(params["recognizer"], stats["recognizer"], [hr, up, restored], ids)[0] \
                        if into_sr else 0.0
                    return rec + into_sr * ident, rec

                (_, rec), grads = jax.value_and_grad(sr_loss, has_aux=True)(params["sr"])
                params, opt_state = _update(optimizers, params, opt_state, {"sr": grads})
                images.append(jax.lax.stop_gradient(sr.apply({"params": params["sr"]}, lr)))
            (ident, new_stats), grads = jax.value_and_grad(identity_loss, has_aux=True)(
                params["recognizer"], stats["recognizer"], images, ids)
            params, opt_state = _update(optimizers, params, opt_state, {"recognizer": grads})
            return params, {"recognizer": new_stats}, opt_state, count + 1, ident + rec
        return step

    return _bare(config, stage, make_step)


BARE_STEPS = {"distill": distill_step, "multitask": multitask_step, "mutual": mutual_step,
              "semi_distill": semi_distill_step, "sr_recognition": sr_recognition_step}
