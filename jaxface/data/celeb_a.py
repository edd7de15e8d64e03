"""CelebA (TFDS `celeb_a`) as face-attribute data: which CelebA labels stand for which attribute heads.

Preparing `celeb_a` needs TensorFlow once (see README); reading the prepared array_record files does not.
"""

from __future__ import annotations

import numpy as np

from jaxface.data.images import resize_images
from jaxface.data.synthetic_faces import QUALITY_NAMES

CELEB_A_LABELS = {"gender": "Male", "smile": "Smiling", "glasses": "Eyeglasses", "age": "Young",
                  "face_value": "Attractive", "quality": "Blurry"}  # age, face value and quality become binary
CELEB_A_MISSING = ("mask", "pose")  # no CelebA label: masked, and no head is built for them
CELEB_A_CLASS_NAMES = {"age": ("not young", "young"), "face_value": ("not attractive", "attractive"),
                       "quality": QUALITY_NAMES}
CELEB_A_CROP = (20, 198)  # rows of the 218x178 aligned image kept as a centred 178x178 square


def celeb_a_to_canonical(examples: list[dict], image_size: int, heads: tuple[str, ...]) -> dict:
    """Raw `celeb_a` examples ({'image' [218, 178, 3] uint8, 'attributes' {name: bool}, 'landmarks'})
    -> the multi-task recipe's arrays ('known' and 'train_mask' columns in the order of `heads`).
    Mapped heads (`CELEB_A_LABELS`) are labelled for every example, mask and pose nowhere; every example
    counts as set 2 (independent + coupled labels, no pose)."""
    n = len(examples)
    images = np.stack([np.asarray(e["image"], np.uint8) for e in examples])
    if images.shape[1:] == (218, 178, 3):
        images = images[:, CELEB_A_CROP[0]:CELEB_A_CROP[1]]
    out = {"image": resize_images(images, image_size), "subset": np.full(n, 2, np.int32)}
    for head, attribute in CELEB_A_LABELS.items():
        out[head] = np.array([bool(e["attributes"][attribute]) for e in examples], np.int32)
    out["mask"] = np.zeros(n, np.int32)
    out["pose"] = np.zeros((n, 3), np.float32)
    known = np.array([h not in CELEB_A_MISSING for h in heads], np.float32)
    out["known"] = np.tile(known, (n, 1))
    out["train_mask"] = out["known"].copy()
    return out


def open_celeb_a(split: str, data_dir: str):
    """The prepared TFDS `celeb_a` split (array_record; preparing it needs TensorFlow, see README)."""
    import tensorflow_datasets as tfds

    try:
        return tfds.data_source("celeb_a", split=split, data_dir=data_dir)
    except Exception as e:  # tfds raises several types for a missing or tfrecord-only data set
        raise FileNotFoundError(
            f"celeb_a/{split} is not prepared as array_record under {data_dir} ({type(e).__name__}); prepare it "
            f"once with TensorFlow installed: tfds.builder('celeb_a', data_dir=..., file_format='array_record')"
            f".download_and_prepare()") from None
