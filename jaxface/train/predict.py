"""Data-parallel inference for evaluators: a predict function over a whole split, and its throughput.

A predict function is pure: predict(variables, batch) -> {name: array [B, ...]}. It is jitted once
with the batch split over the mesh; every process reads only its slice of each batch and all
processes receive the full outputs (so any of them can compute metrics).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxface.data.images import center_square, resize_images
from jaxface.data.pipeline import ordered_batches
from jaxface.models.common import param_count
from jaxface.train import devices

PredictFn = Callable[[Any, dict], dict]


class Predictor:
    def __init__(self, predict_fn: PredictFn, variables: Any, mesh, batch_size: int):
        devices.local_batch_size(batch_size, mesh)  # clear error on an indivisible batch
        self.mesh, self.batch_size = mesh, batch_size
        self._fn = jax.jit(predict_fn, out_shardings=NamedSharding(mesh, P(devices.AXIS)))
        self.set_variables(variables)

    def set_variables(self, variables: Any) -> None:
        """Predicts with `variables` from now on (compiled once for all variables of one structure):
        host values, or arrays already replicated on the mesh (a training state's)."""
        replicated = NamedSharding(self.mesh, P())
        on_mesh = all(isinstance(x, jax.Array) and x.sharding.is_equivalent_to(replicated, x.ndim)
                      for x in jax.tree.leaves(variables))
        self.variables = variables if on_mesh else devices.replicate(variables, self.mesh)

    def _local_slice(self, batch: dict) -> dict:
        n = self.batch_size // jax.process_count()
        start = jax.process_index() * n
        return {k: v[start:start + n] for k, v in batch.items()}

    def __call__(self, batch: dict) -> dict:
        """batch: the GLOBAL batch as host arrays (every process passes the same) -> outputs on host."""
        out = self._fn(self.variables, devices.shard_batch(self._local_slice(batch), self.mesh))
        if jax.process_count() > 1:
            return multihost_utils.process_allgather(out, tiled=True)
        return jax.device_get(out)

    def predict_split(self, source: Any, transform=None, limit: int | None = None,
                      keep_inputs: tuple[str, ...] = ()) -> dict:
        """Predictions for the examples of `source` in order: {name: np.ndarray [N, ...]}; `keep_inputs`
        names batch fields to return alongside (e.g. ground truth)."""
        chunks: dict[str, list] = {}
        for batch, valid in ordered_batches(source, self.batch_size, transform, limit):
            out = dict(self(batch))
            out.update({k: batch[k] for k in keep_inputs})
            for k, v in out.items():
                chunks.setdefault(k, []).append(np.asarray(v)[:valid])
        return {k: np.concatenate(v) for k, v in chunks.items()}

    def throughput(self, batch: dict, *, repeats: int = 10) -> float:
        """Images per second of the jitted predict function on one fixed batch (compile excluded,
        input already on device, output synchronised)."""
        inputs = devices.shard_batch(self._local_slice(batch), self.mesh)
        jax.block_until_ready(self._fn(self.variables, inputs))
        t0 = time.perf_counter()
        for _ in range(repeats):
            out = self._fn(self.variables, inputs)
        jax.block_until_ready(out)
        return repeats * self.batch_size / (time.perf_counter() - t0)


def predict_stages(store, models: Mapping[str, tuple[str, str, PredictFn]], source, mesh, batch_size: int, *,
                   transform=None, limit: int | None = None, keep_inputs: tuple[str, ...] = (),
                   timed_batch: dict | None = None, repeats: int = 10) -> dict[str, dict]:
    """What a recipe's evaluation does for each of its models: {key: (stage, model, predict_fn)} ->
    {key: {'outputs': `predict_split` of the finished stage's model on `source`, 'params': its parameter
    count, 'images/s': `throughput` on `timed_batch` (None: not timed)}}. Keys sharing one predict
    function are timed once (the same network with other weights runs at the same speed)."""
    out, timed = {}, {}
    for key, (stage, model, predict_fn) in models.items():
        variables = store.load(stage)[model]
        predictor = Predictor(predict_fn, variables, mesh, batch_size)
        if timed_batch is not None and predict_fn not in timed:
            timed[predict_fn] = predictor.throughput(timed_batch, repeats=repeats)
        out[key] = {"outputs": predictor.predict_split(source, transform, limit, keep_inputs),
                    "params": param_count(variables["params"]), "images/s": timed.get(predict_fn)}
    return out


def image_input_format(size: int) -> dict:
    """`input_format` of a model reading one RGB uint8 image of `size` x `size` pixels."""
    return {"image": {"shape": [size, size, 3], "dtype": "uint8", "range": [0, 255], "layout": "HWC, RGB"}}


def predict_images(predict_fn: PredictFn, variables: Any, images: list, size: int,
                   image_key: str = "image") -> list[tuple[dict, tuple[int, int, int]]]:
    """Runs `predict_fn` on image files' pixels, one at a time: each RGB uint8 image [H, W, 3] of any
    size is cut to its centred square, resized to `size` and passed as batch {image_key: [1, size, size, 3]}.
    Returns per image (outputs without the batch axis, as host arrays; (top, left, side) of the square
    in the image's pixels, to map outputs such as boxes back)."""
    apply = jax.jit(predict_fn)
    results = []
    for image in images:
        image = np.asarray(image, np.uint8)
        out = jax.device_get(apply(variables, {image_key: resize_images(image[None], size)}))
        results.append(({k: np.asarray(v[0]) for k, v in out.items()}, center_square(*image.shape[:2])))
    return results
