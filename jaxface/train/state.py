"""Train state: every trainable model of a stage, its optimizer state, the step and the PRNG key.

A stage may train several models at once (super-resolution + recogniser, two segmenters that
supervise each other, student + its feature adapters). Each model has its own optax optimizer, so
the state keeps dicts keyed by model name rather than a single params tree.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax
from flax import struct

Variables = Mapping[str, Any]  # {'params': ..., 'batch_stats': ...} of one linen module


@struct.dataclass
class TrainState:
    """Replicated training state of one stage.

    Attributes:
      step: int32 scalar, number of steps taken in this stage. The core advances it once per call of
        the step function (`devices.compile_step`), however many updates that step makes (a step may
        update model A, then model B with A's new output); inside a step it is the count before it.
      params: {model_name: params pytree}.
      batch_stats: {model_name: BatchNorm statistics} ({} for models without BatchNorm).
      opt_state: {model_name: optax state}.
      rng: base PRNG key of the stage; the key of step s is `fold_in(rng, s)` so randomness is a pure
        function of (seed, step) and survives a resume exactly.
      tx: {model_name: optax.GradientTransformation} (static, not saved).
    """

    step: jax.Array
    params: dict
    batch_stats: dict
    opt_state: dict
    rng: jax.Array
    tx: dict = struct.field(pytree_node=False)

    @classmethod
    def create(cls, *, variables: Mapping[str, Variables], tx: Mapping[str, optax.GradientTransformation],
               rng: jax.Array) -> "TrainState":
        """variables: {model_name: {'params': ..., 'batch_stats'?: ...}}; tx has one optimizer per model."""
        if set(variables) != set(tx):
            raise ValueError(f"models {sorted(variables)} and optimizers {sorted(tx)} must name the same models")
        params = {name: v["params"] for name, v in variables.items()}
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats={name: v.get("batch_stats", {}) for name, v in variables.items()},
            opt_state={name: tx[name].init(p) for name, p in params.items()},
            rng=rng,
            tx=dict(tx),
        )

    def variables(self, name: str) -> dict:
        """The linen variables of one model, ready for `module.apply`."""
        out = {"params": self.params[name]}
        if self.batch_stats.get(name):
            out["batch_stats"] = self.batch_stats[name]
        return out

    def step_rng(self) -> jax.Array:
        return jax.random.fold_in(self.rng, self.step)

    def apply_gradients(self, grads: Mapping[str, Any], batch_stats: Mapping[str, Any] | None = None) -> "TrainState":
        """One optimizer update for each model in `grads` (models absent from `grads` are left as they
        are). It does not advance `step` (the core does, once per step), so a step may call it once per
        model in turn.

        batch_stats: updated BatchNorm statistics by model name (from `mutable=['batch_stats']`).
        """
        params, opt_state = dict(self.params), dict(self.opt_state)
        for name, g in grads.items():
            updates, opt_state[name] = self.tx[name].update(g, self.opt_state[name], self.params[name])
            params[name] = optax.apply_updates(self.params[name], updates)
        new_stats = dict(self.batch_stats)
        new_stats.update(batch_stats or {})
        return self.replace(params=params, opt_state=opt_state, batch_stats=new_stats)
