"""MNIST-format image classification sets (Fashion-MNIST, MNIST, any set in the four standard IDX files),
read offline from a manual directory into memory, TensorFlow-free.

The directory holds `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and
`t10k-labels-idx1-ubyte`, each optionally gzipped (`.gz`). IDX: two zero bytes, a type byte (0x08 =
uint8), the number of dimensions d, d big-endian int32 sizes, then the data in C order.

Splits: 'test' is the t10k files; 'validation' is `validation_size` training images held out (the last
of a permutation seeded by crc32('validation'), the same for every run); 'train' is the rest. Images
come back as RGB uint8 [N, size, size, 3] (the grey channel repeated, resized when size != 28), labels
int32 [N]: the same features as `gesture_crops`, so a recipe reads either.
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from jaxface.data.images import resize_images
from jaxface.data.pipeline import ArraySource

STEMS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
# Where the Debian / Ubuntu packages install the files ('' = no package: give the directory).
DEFAULT_DIRS = {"fashion_mnist": "/usr/share/datasets/fashion-mnist", "mnist": ""}
HOMEPAGES = {"fashion_mnist": "https://github.com/zalandoresearch/fashion-mnist",
             "mnist": "https://yann.lecun.com/exdb/mnist/"}
CLASS_NAMES = {"fashion_mnist": ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                                 "sneaker", "bag", "ankle boot"),
               "mnist": tuple(str(d) for d in range(10))}
SPLITS = ("train", "validation", "test")


def read_idx(path: str) -> np.ndarray:
    """The array stored in one IDX file (gzipped when its name ends in .gz)."""
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of uint8 (magic bytes {data[:4]!r})")
    ndim = data[3]
    shape = tuple(int(n) for n in np.frombuffer(data, ">i4", count=ndim, offset=4))
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} ({int(np.prod(shape))} bytes) but holds {body.size} bytes")
    return body.reshape(shape)


def missing_files(manual_dir: str) -> list[str]:
    """The standard file names found neither plain nor gzipped in `manual_dir`."""
    stems = [s for pair in STEMS.values() for s in pair]
    return [s for s in stems if not any(os.path.exists(os.path.join(manual_dir, s + e)) for e in ("", ".gz"))]


def check_manual_dir(name: str, manual_dir: str, key: str = "config.data.manual_dir") -> str:
    """`manual_dir` ('' = the package's default) when it holds the four files; else one line saying how to get them."""
    directory = manual_dir or DEFAULT_DIRS[name]
    missing = missing_files(directory) if directory else ["all four IDX files"]
    if missing:
        package = " (the Debian/Ubuntu package dataset-fashion-mnist installs them there: apt install " \
                  "dataset-fashion-mnist)" if name == "fashion_mnist" else ""
        shown = ", ".join(missing[:2]) + (" ..." if len(missing) > 2 else "")
        raise FileNotFoundError(f"{name}: {shown} not found in {directory or '(no directory given)'}{package}; or "
                                f"download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                                f"t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz from {HOMEPAGES[name]} and set "
                                f"--{key}=DIR")
    return directory


def _path(directory: str, stem: str) -> str:
    plain = os.path.join(directory, stem)
    return plain if os.path.exists(plain) else plain + ".gz"


def load(directory: str, split: str, *, size: int = 28, validation_size: int = 5000) -> ArraySource:
    """Split `split` of the IDX files in `directory` as {'image': uint8 [N, size, size, 3], 'label': int32 [N]}."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}; got {split!r}")
    images, labels = (read_idx(_path(directory, stem)) for stem in STEMS["test" if split == "test" else "train"])
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise ValueError(f"{directory}: images {images.shape} and labels {labels.shape} do not pair up")
    if split != "test":
        if not 0 < validation_size < len(images):
            raise ValueError(f"validation_size={validation_size} must be in (0, {len(images)})")
        order = np.random.default_rng(zlib.crc32(b"validation")).permutation(len(images))
        keep = np.sort(order[-validation_size:] if split == "validation" else order[:-validation_size])
        images, labels = images[keep], labels[keep]
    rgb = np.repeat(images[..., None], 3, axis=-1)
    return ArraySource({"image": rgb if size == rgb.shape[1] else resize_images(rgb, size),
                        "label": labels.astype(np.int32)})
