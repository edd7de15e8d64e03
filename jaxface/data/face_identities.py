"""Identity-labelled faces in memory, for face recognition recipes (seed 001).

`identity_splits(data)` gives {'train', 'val', 'test'}, each {'image' [N, S, S, 3] uint8 at the model's
side S = data.image_size, 'identity' [N] int32}, with identity-disjoint val and test:

- `synthetic_faces` (offline): train = the train split's identities less the last `data.val_identities`,
  which are val; test = the test split (identities never in train).
- `lfw` (TFDS, prepared by the user; README): one split of 13,233 images of 5,749 people named by
  'label'. People are numbered in sorted name order and assigned by a stable hash of the name:
  crc32(name) % 10 == 0 -> test, == 1 -> val, else train (about 10 / 10 / 80 %), so the split does not
  depend on the file order or on the TFDS version's example order. Images are cut to their centred
  `data.lfw_crop` square (LFW's 250x250 frames hold the face in the middle) before resizing.

Reading is chunked so only one chunk is held at the stored resolution.
"""

from __future__ import annotations

import zlib

import numpy as np

from jaxface.data import synthetic_faces as sf
from jaxface.data.images import resize_images
from jaxface.data.pipeline import resolve_data_dir

CHUNK = 512
DATASETS = ("synthetic_faces", "lfw")
LFW_FRAME = 250
VALIDATION = "validation"  # data.eval_split that evaluates on the held-out identities


def prepare(data) -> None:
    """Generates `synthetic_faces` on first use; LFW is prepared by the user (README). Multi-process runs
    call it on process 0 first (`devices.main_process_first`)."""
    if data.name == "synthetic_faces":
        sf.prepare(data.builder_config, resolve_data_dir(data.data_dir))


def open_lfw(data_dir: str):
    """The prepared TFDS `lfw` train split (array_record; preparing it needs TensorFlow, see README)."""
    import tensorflow_datasets as tfds

    try:
        return tfds.data_source("lfw", split="train", data_dir=data_dir)
    except Exception as e:  # tfds raises several types for a missing or tfrecord-only data set
        raise FileNotFoundError(
            f"lfw is not prepared as array_record under {data_dir} ({type(e).__name__}); prepare it once with "
            f"TensorFlow installed (pip install -e '.[lfw]'): tfds.builder('lfw', data_dir=..., "
            f"file_format='array_record').download_and_prepare()") from None


def _read(source, n: int, convert) -> list:
    out = []
    for start in range(0, n, CHUNK):
        indices = list(range(start, min(start + CHUNK, n)))
        rows = source.__getitems__(indices) if hasattr(source, "__getitems__") else [source[i] for i in indices]
        out.append(convert(rows))
    return out


def load_identities(builder_config: str, split: str, data_dir: str, image_size: int, limit: int = -1) -> dict:
    """The first `limit` examples (-1: all) of a prepared `synthetic_faces` split."""
    source = sf.data_source(builder_config, split, data_dir)
    n = len(source) if limit < 0 else min(limit, len(source))
    chunks = _read(source, n, lambda rows: (resize_images(np.stack([r["image"] for r in rows]), image_size),
                                            np.asarray([r["identity"] for r in rows], np.int32)))
    return {"image": np.concatenate([c[0] for c in chunks]), "identity": np.concatenate([c[1] for c in chunks])}


def hold_out(arrays: dict, first_held: int) -> tuple[dict, dict]:
    """(examples of identities < first_held, examples of identities >= first_held)."""
    held = arrays["identity"] >= first_held
    return {k: v[~held] for k, v in arrays.items()}, {k: v[held] for k, v in arrays.items()}


def lfw_part(name: str) -> str:
    """'test', 'val' or 'train': where person `name` goes (module docstring)."""
    bucket = zlib.crc32(name.encode()) % 10
    return "test" if bucket == 0 else "val" if bucket == 1 else "train"


def load_lfw(data, limit: int = -1) -> dict:
    """{'train', 'val', 'test'} of LFW (module docstring)."""
    source = open_lfw(resolve_data_dir(data.data_dir))
    n = len(source) if limit < 0 else min(limit, len(source))
    top = (LFW_FRAME - data.lfw_crop) // 2

    def convert(rows):
        images = np.stack([np.asarray(r["image"], np.uint8) for r in rows])
        if images.shape[1:3] == (LFW_FRAME, LFW_FRAME):
            images = images[:, top:top + data.lfw_crop, top:top + data.lfw_crop]
        names = [r["label"].decode() if isinstance(r["label"], bytes) else str(r["label"]) for r in rows]
        return resize_images(images, data.image_size), names

    chunks = _read(source, n, convert)
    images, names = np.concatenate([c[0] for c in chunks]), [name for c in chunks for name in c[1]]
    number = {name: i for i, name in enumerate(sorted(set(names)))}
    identity = np.asarray([number[name] for name in names], np.int32)
    part = np.asarray([lfw_part(name) for name in names])
    return {p: {"image": images[part == p], "identity": identity[part == p]} for p in ("train", "val", "test")}


def identity_splits(data) -> dict:
    """{'train', 'val', 'test'} of the data set `data.name` (module docstring), from the config section
    `data` (name, data_dir, image_size, and builder_config, train/eval_split, val_identities for
    synthetic_faces, lfw_crop for LFW; max_train_examples / max_eval_examples cap what is read).
    data.eval_split == 'validation' (`experiments.evaluate --split=validation`, every choice): 'test' IS
    'val', the held-out identities, so the test identities are not read."""
    if data.name == "lfw":
        splits = load_lfw(data, data.max_train_examples)
    else:
        data_dir, first = resolve_data_dir(data.data_dir), sf.CONFIGS[data.builder_config].num_train_identities
        train = load_identities(data.builder_config, data.train_split, data_dir, data.image_size,
                                data.max_train_examples)
        splits = dict(zip(("train", "val"), hold_out(train, first - data.val_identities)))
        if data.eval_split != VALIDATION:
            splits["test"] = load_identities(data.builder_config, data.eval_split, data_dir, data.image_size,
                                             data.max_eval_examples)
    return {**splits, "test": splits["val"]} if data.eval_split == VALIDATION else splits
