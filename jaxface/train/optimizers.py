"""One optimizer builder for every recipe, from the config's `optimizer` section.

  optimizer.name             'adamw' | 'adam' | 'sgd' (Nesterov-free momentum `optimizer.momentum`)
  optimizer.learning_rate    peak learning rate
  optimizer.schedule         'cosine': linear warmup from 0 over `warmup_steps`, then cosine decay to 0
                             at the stage's last step; 'constant': the same warmup, then constant
  optimizer.warmup_steps     >= 0, fewer than every stage's steps
  optimizer.weight_decay     adamw: decoupled weight decay; sgd: added to the gradient (L2); adam: must be 0
  optimizer.grad_clip_norm   clip the global gradient norm to this value first; 0 turns it off
  optimizer.momentum         sgd only
  optimizer.per_model        optional {network: {key: value}}: one network's own values of any key above, e.g.
                             {'teacher': {'learning_rate': 3e-3}}; the rest of the section applies to it too
                             (`for_model`; recipes pass the network's name to `make_optimizer`)

The learning rate is an injected hyperparameter (`optax.inject_hyperparams`), so it lives in the
optimizer state: the core logs the rate each step used (`learning_rates`) and it is checkpointed with
the rest of the state. Each stage gets its own schedule over its own length (`make_optimizer`).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import ml_collections
import optax

NAMES = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "constant")
# The keys a config's `optimizer` section has; every one shapes training (all go into fingerprints).
KEYS = ("name", "learning_rate", "schedule", "warmup_steps", "weight_decay", "grad_clip_norm", "momentum")
PER_MODEL = "per_model"  # the optional key of per-network overrides


def default_config(**overrides) -> ml_collections.ConfigDict:
    """The `optimizer` section with the project's defaults (AdamW, cosine, no clipping), updated by
    `overrides` (e.g. learning_rate=1e-2)."""
    unknown = sorted(set(overrides) - {*KEYS, PER_MODEL})
    if unknown:
        raise ValueError(f"unknown optimizer option {unknown[0]!r}; allowed: {', '.join((*KEYS, PER_MODEL))}")
    return ml_collections.ConfigDict({**dict(name="adamw", learning_rate=1e-3, schedule="cosine", warmup_steps=0,
                                             weight_decay=1e-4, grad_clip_norm=0.0, momentum=0.9), **overrides})


def for_model(optimizer, model: str | None) -> Mapping[str, Any]:
    """The section network `model` trains with: `optimizer.per_model[model]`'s values over the shared ones
    (the shared section itself when `model` is None or has no entry)."""
    own = dict(optimizer.get(PER_MODEL, None) or {}).get(model) if model is not None else None
    if not own:
        return optimizer
    return ml_collections.ConfigDict({**{k: optimizer[k] for k in KEYS if k in optimizer}, **dict(own)})


def validate(optimizer, stage_steps: Mapping[str, int], models: Sequence[str] = (),
             where: str = "config.optimizer") -> None:
    """Raises ValueError with one line naming the key (`config.optimizer.<key>`, or
    `config.optimizer.per_model.<network>.<key>`) when the section, or a network's section, cannot build an
    optimizer for a stage of `stage_steps` ({stage: number of steps}); `models`: the networks a
    `per_model` entry may name (those the recipe builds per-network optimizers for)."""
    missing = [k for k in KEYS if k not in optimizer]
    if missing:
        raise ValueError(f"{where} has no {missing[0]!r}; it needs {', '.join(KEYS)}")
    per_model = optimizer.get(PER_MODEL, None) or {}
    is_mapping = lambda x: isinstance(x, (Mapping, ml_collections.ConfigDict))
    if not is_mapping(per_model) or not all(is_mapping(v) for v in per_model.values()):
        raise ValueError(f"{where}.{PER_MODEL} must map network names to {{key: value}} overrides, "
                         f"e.g. {{'teacher': {{'learning_rate': 0.003}}}}")
    for model, own in per_model.items():
        if model not in models:
            raise ValueError(f"{where}.{PER_MODEL}.{model}: no such network with its own optimizer; "
                             f"allowed: {', '.join(models) or 'none in this recipe'}")
        unknown = sorted(set(own) - set(KEYS))
        if unknown:
            raise ValueError(f"{where}.{PER_MODEL}.{model}.{unknown[0]}: unknown; allowed: {', '.join(KEYS)}")
        if own:  # an empty entry is the shared section, checked below
            validate(for_model(optimizer, model), stage_steps, where=f"{where}.{PER_MODEL}.{model}")
    if optimizer.name not in NAMES:
        raise ValueError(f"{where}.name={optimizer.name!r}; allowed: {', '.join(NAMES)}")
    if optimizer.schedule not in SCHEDULES:
        raise ValueError(f"{where}.schedule={optimizer.schedule!r}; allowed: {', '.join(SCHEDULES)}")

    for key, strict in (("learning_rate", True), ("warmup_steps", False), ("weight_decay", False),
                        ("grad_clip_norm", False), ("momentum", False)):
        value = optimizer[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or \
                value < 0 or (strict and value == 0):
            raise ValueError(f"{where}.{key}={value} must be a finite number {'>' if strict else '>='} 0")
    if optimizer.name == "adam" and optimizer.weight_decay:
        raise ValueError(f"{where}.weight_decay={optimizer.weight_decay} does not apply to 'adam'; "
                         f"use name='adamw' for Adam with weight decay, or set it to 0")
    if optimizer.momentum >= 1:
        raise ValueError(f"{where}.momentum={optimizer.momentum} must be < 1")
    if int(optimizer.warmup_steps) != optimizer.warmup_steps:
        raise ValueError(f"{where}.warmup_steps={optimizer.warmup_steps} must be a whole number")
    for stage, steps in stage_steps.items():
        if steps <= optimizer.warmup_steps:
            raise ValueError(f"config.train.steps.{stage}={steps} must be more than {where}.warmup_steps="
                             f"{optimizer.warmup_steps} (warmup, then at least one step of the schedule)")


def learning_rate_schedule(optimizer, num_steps: int) -> optax.Schedule:
    """step -> learning rate for a stage of `num_steps` steps (step 0 is the first update)."""
    peak, warmup = float(optimizer.learning_rate), int(optimizer.warmup_steps)
    if optimizer.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, num_steps)
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak)], [warmup])


def make_optimizer(optimizer, num_steps: int, model: str | None = None) -> optax.GradientTransformation:
    """The optax transformation of a stage of `num_steps` steps (see the module docstring) for network
    `model` (None: the shared section, ignoring `per_model`)."""
    optimizer = for_model(optimizer, model)
    def build(learning_rate):
        if optimizer.name == "adamw":
            core = optax.adamw(learning_rate, weight_decay=optimizer.weight_decay)
        elif optimizer.name == "adam":
            core = optax.adam(learning_rate)
        else:
            core = optax.chain(optax.add_decayed_weights(optimizer.weight_decay) if optimizer.weight_decay
                               else optax.identity(), optax.sgd(learning_rate, momentum=optimizer.momentum or None))
        if optimizer.grad_clip_norm:
            return optax.chain(optax.clip_by_global_norm(optimizer.grad_clip_norm), core)
        return core

    return optax.inject_hyperparams(build)(learning_rate=learning_rate_schedule(optimizer, num_steps))


def learning_rates(state) -> dict[str, Any]:
    """The learning rate each model's last update used, from a `TrainState` whose optimizers come from
    `make_optimizer` (or any `optax.inject_hyperparams` optimizer). Models that share one optimizer
    object share one entry: {'learning_rate': lr} when there is one, else {'learning_rate/<model>': lr}
    named after the first model of each. Optimizers that expose no rate are left out."""
    found: dict[int, tuple[str, Any]] = {}
    for name in sorted(state.opt_state):
        opt_state = state.opt_state[name]
        if "learning_rate" in getattr(opt_state, "hyperparams", {}):  # an optax.inject_hyperparams state
            found.setdefault(id(state.tx[name]), (name, opt_state.hyperparams["learning_rate"]))
    if len(found) == 1:
        return {"learning_rate": next(iter(found.values()))[1]}
    return {f"learning_rate/{name}": lr for name, lr in found.values()}
