"""A two-model toy recipe used to test the training core (not a real method)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxface.data.pipeline import ArraySource, ShuffledBatches
from jaxface.train import devices
from jaxface.train.stages import Stage


class Encoder(nn.Module):
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Dense(8)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, axis_name=self.bn_axis_name)(x)
        return nn.tanh(x)


class Decoder(nn.Module):
    @nn.compact
    def __call__(self, h):
        return nn.Dense(1)(h)


def toy_data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0], np.float32) + 0.1 * rng.normal(size=n)).astype(np.float32)
    return ArraySource({"x": x, "y": y[:, None]})


def joint_step(state, frozen, batch, rng):
    """Encoder (SGD) and decoder (Adam) trained together, each with its own optimizer."""
    enc, dec = Encoder(bn_axis_name=devices.AXIS), Decoder()

    def loss_fn(params):
        h, updates = enc.apply({"params": params["enc"], "batch_stats": state.batch_stats["enc"]}, batch["x"],
                               train=True, mutable=["batch_stats"])
        pred = dec.apply({"params": params["dec"]}, h)
        loss = jnp.mean((pred - batch["y"]) ** 2)
        return loss, updates["batch_stats"]

    params = {"enc": state.params["enc"], "dec": state.params["dec"]}
    (loss, stats), grads = devices.value_and_mean_grad(loss_fn, params)
    state = state.apply_gradients(grads, batch_stats={"enc": stats})
    return state, {"loss": loss}


def distill_step(state, frozen, batch, rng):
    """A one-model student regressing the frozen encoder+decoder's output."""
    enc, dec = Encoder(), Decoder()

    def loss_fn(p):
        teacher = dec.apply(frozen["dec"], enc.apply(frozen["enc"], batch["x"], train=False))
        pred = dec.apply({"params": p}, batch["x"][:, :8] @ jnp.ones((4, 8)) * 0.1)
        return jnp.mean((pred - teacher) ** 2), None

    (loss, _), grads = devices.value_and_mean_grad(loss_fn, state.params["student"])
    return state.apply_gradients({"student": grads}), {"loss": loss}


def toy_stages(steps=(12, 6), batch_size=16, seed=0, data=None, student_data=None):
    """The two stages; `data` feeds both unless the student stage gets `student_data`."""
    data = data or ShuffledBatches(toy_data(), global_batch_size=batch_size, seed=seed)
    x0 = jnp.zeros((1, 4))

    def init_joint(rng, load):
        k1, k2 = jax.random.split(rng)
        enc_vars = Encoder().init(k1, x0, train=False)
        return {"enc": enc_vars, "dec": Decoder().init(k2, jnp.zeros((1, 8)))}

    def init_student(rng, load):
        return {"student": Decoder().init(rng, jnp.zeros((1, 8)))}

    return [
        Stage(name="joint", init=init_joint, optimizers={"enc": optax.sgd(0.1, momentum=0.9), "dec": optax.adam(1e-2)},
              step=joint_step, data=data, num_steps=steps[0]),
        Stage(name="student", init=init_student, optimizers={"student": optax.adam(1e-2)}, step=distill_step,
              data=student_data or data, num_steps=steps[1], frozen=lambda load: load("joint")),
    ]
