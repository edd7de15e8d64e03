"""Face-attribute data in one canonical form, from the offline `synthetic_faces` or TFDS `celeb_a`.

Canonical arrays (`load_split`), N examples at the model's input size S:
  image       uint8 [N, S, S, 3]
  <head>      one label array per head of `HEADS`: int32 [N] (classification), float32 [N] (regression),
              pose float32 [N, 3] (yaw, pitch, roll in degrees)
  subset      int32 [N], the curriculum set (1: independent labels, 2: + coupled, 3: large poses)
  train_mask  float32 [N, len(HEADS)], labels a training step may use
  known       float32 [N, len(HEADS)], labels that exist (for evaluation); synthetic_faces: every attribute,
              and pose where the data set labels it (`pose_mask`, the large-pose subset 3): the near-frontal
              faces' small angles are not a pose label of the data set
"""

from __future__ import annotations

import functools

import numpy as np

from jaxface.data import synthetic_faces as sf
from jaxface.data.celeb_a import CELEB_A_CLASS_NAMES, CELEB_A_MISSING, celeb_a_to_canonical, open_celeb_a
from jaxface.data.images import resize_images
from jaxface.data.pipeline import ArraySource, resolve_data_dir

HEADS = sf.ATTRIBUTES + ("pose",)  # column order of `train_mask` / `known`
DATASETS = ("synthetic_faces", "celeb_a")
CLASS_NAMES = {"gender": ("female", "male"), "smile": ("neutral", "smiling"), "quality": sf.QUALITY_NAMES,
               "mask": ("no", "yes"), "glasses": ("no", "yes")}


def head_specs(dataset: str) -> dict[str, sf.AttributeSpec]:
    """Every head `dataset` labels: {name: spec} in `HEADS` order (CelebA: binary age and face value,
    no mask or pose)."""
    specs = {**sf.ATTRIBUTE_SPECS, "pose": sf.POSE_SPEC}
    if dataset == "celeb_a":
        binary = sf.AttributeSpec("classification", num_classes=2)
        specs.update(age=binary, face_value=binary)
        return {h: s for h, s in specs.items() if h not in CELEB_A_MISSING}
    return specs


def regression_scales(dataset: str) -> dict[str, float]:
    """{regression head: label scale s_h} of `dataset` (the loss divides errors by it)."""
    return {h: sf.LABEL_SCALES[h] for h, spec in head_specs(dataset).items() if spec.kind == "regression"}


def class_names(dataset: str, head: str) -> tuple[str, ...]:
    names = CELEB_A_CLASS_NAMES if dataset == "celeb_a" else {}
    return names.get(head, CLASS_NAMES.get(head, ()))


def synthetic_to_canonical(examples: dict, image_size: int) -> dict:
    """Stacked `synthetic_faces` features -> the canonical arrays."""
    n = len(examples["image"])
    train_mask = np.concatenate([examples["label_mask"], examples["pose_mask"][:, None]], axis=1)
    known = np.concatenate([np.ones((n, len(HEADS) - 1)), examples["pose_mask"][:, None]], axis=1)
    out = {"image": resize_images(examples["image"], image_size), "subset": examples["subset"].astype(np.int32),
           "train_mask": train_mask.astype(np.float32), "known": known.astype(np.float32)}
    out.update({h: examples[h] for h in HEADS})
    return out


def prepare(data) -> None:
    """Generates `synthetic_faces` on first use (CelebA is prepared by the user, see README). Multi-process
    runs call it on process 0 first (`devices.main_process_first`)."""
    if data.name == "synthetic_faces":
        sf.prepare(data.builder_config, resolve_data_dir(data.data_dir))


def load_split(data, split: str, limit: int = -1, chunk: int = 512) -> ArraySource:
    """A whole split of the prepared data set named by the config section `data` (name, builder_config,
    data_dir, image_size) in memory as canonical arrays, the first `limit` examples (-1: all). Read in
    chunks so only one chunk is held at full resolution."""
    data_dir = resolve_data_dir(data.data_dir)
    if data.name == "celeb_a":
        source = open_celeb_a(split, data_dir)
        convert = functools.partial(celeb_a_to_canonical, heads=HEADS)
    else:
        source = sf.data_source(data.builder_config, split, data_dir)
        convert = lambda rows, size: synthetic_to_canonical(  # noqa: E731
            {k: np.stack([r[k] for r in rows]) for k in rows[0]}, size)

    def read(indices: np.ndarray) -> list[dict]:
        if hasattr(source, "__getitems__"):
            return source.__getitems__(indices.tolist())
        return [source[int(i)] for i in indices]

    n = len(source) if limit < 0 else min(limit, len(source))
    chunks = [convert(read(np.arange(s, min(s + chunk, n))), data.image_size) for s in range(0, n, chunk)]
    return ArraySource({k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]})


def examples_labelling(arrays: ArraySource, heads, subsets) -> np.ndarray:
    """Indices of the examples of curriculum `subsets` that carry at least one training label of `heads`."""
    columns = [HEADS.index(h) for h in heads]
    keep = np.isin(arrays.arrays["subset"], subsets) & (arrays.arrays["train_mask"][:, columns].max(axis=1) > 0)
    if not keep.any():
        raise ValueError(f"no training example of subsets {tuple(subsets)} labels any of {tuple(heads)}")
    return np.flatnonzero(keep)


def step_batch(batch: dict, heads: tuple[str, ...]) -> dict:
    """Canonical batch -> what a training step reads: 'image', the labels of `heads` and their masks
    'mask_<head>' (float32 [B], 1 where the label may be used)."""
    out = {"image": batch["image"]}
    for h in heads:
        out[h] = batch[h]
        out[f"mask_{h}"] = batch["train_mask"][:, HEADS.index(h)]
    return out
