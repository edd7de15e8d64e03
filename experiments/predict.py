r"""Predicts with a finished run: one JSON line per image on stdout.

  python -m experiments.predict --workdir=runs/mt face1.png face2.jpg    # attributes
  python -m experiments.predict --workdir=runs/distill photos/           # boxes; a folder: its images

The run's `config.json` names its recipe; the recipe module provides
`predict_images(config, workdir, images: list[np.ndarray [H, W, 3] uint8]) -> list[dict]` (a later
recipe registers itself by defining that function). Every file is read here: a missing, empty,
unreadable, non-image or absurdly large file gets one line on stderr naming it, the others are still
predicted, and the exit code is 1 if any file failed (2 if the run itself cannot be used).
Grayscale, palette, alpha, 16-bit and float images are converted to 8-bit RGB; images larger than
`MAX_SIDE` are downscaled before the recipe resizes them to its input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 100_000_000  # refused above this (a 10k x 10k image), checked on the header before decoding
MAX_SIDE = 1024           # larger images are downscaled on reading (the models read <= 112 px)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")  # read from folders


class UnreadableImage(ValueError):
    pass


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Integer images wider than 8 bits are scaled by their type's (or 16-bit) range; float images in [0, 1]
    by 255, others clipped to [0, 255]."""
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.integer):
        top = 65535.0 if array.max(initial=0) <= 65535 else float(np.iinfo(array.dtype).max)
        return np.round(np.clip(array, 0, None) / top * 255.0).astype(np.uint8)
    array = np.nan_to_num(array.astype(np.float64))
    scale = 255.0 if array.max(initial=0.0) <= 1.0 else 1.0
    return np.round(np.clip(array * scale, 0, 255)).astype(np.uint8)


def read_image(path: str) -> np.ndarray:
    """An image file -> RGB uint8 [H, W, 3] with max(H, W) <= MAX_SIDE; UnreadableImage says why not."""
    if not os.path.exists(path):
        raise UnreadableImage("no such file")
    if os.path.isdir(path):
        raise UnreadableImage("is a folder without image files")
    if os.path.getsize(path) == 0:
        raise UnreadableImage("empty file")
    try:
        with warnings.catch_warnings():
            # the size check below replaces Pillow's decompression-bomb warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
        with image:
            width, height = image.size
            if width * height > MAX_PIXELS or width < 1 or height < 1:
                raise UnreadableImage(f"{width}x{height} pixels is outside the allowed 1 to {MAX_PIXELS:,} pixels")
            image.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG decodes directly at a reduced scale
            image.load()
            image = ImageOps.exif_transpose(image)  # as the camera held it (EXIF orientation)
            if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit or float grey
                grey = _to_uint8(np.asarray(image))
                image = Image.fromarray(grey, "L")
            image = image.convert("RGB")
            image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BILINEAR)
            return np.asarray(image, np.uint8).copy()
    except Image.DecompressionBombError:
        raise UnreadableImage(f"image of more pixels than Pillow's limit: pixels is outside the allowed 1 to "
                              f"{MAX_PIXELS:,} pixels") from None
    except UnidentifiedImageError:
        raise UnreadableImage("not an image file Pillow can read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        if isinstance(e, UnreadableImage):
            raise
        raise UnreadableImage(f"corrupt or truncated image ({' '.join(str(e).split())[:120]})") from None


def load_run(workdir: str):
    """(config, recipe module) of a finished run; ValueError / FileNotFoundError with one line otherwise."""
    import ml_collections

    from jaxface.recipes import get_recipe

    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: --workdir must be the workdir of a run of experiments.run")
    with open(path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    return config, get_recipe(config.get("recipe", ""))


def expand_folders(paths: list[str]) -> list[str]:
    """Each folder replaced by its image files (by suffix, sorted); files are kept as given."""
    out = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMAGE_SUFFIXES))
            out.extend(found or [path])  # an empty folder is reported as not an image
        else:
            out.append(path)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Predict with a finished run (attributes, boxes) on image files.")
    parser.add_argument("--workdir", required=True, help="workdir of a finished experiments.run run")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...) or folders of them")
    args = parser.parse_args(argv)
    args.images = expand_folders(args.images)
    try:
        config, recipe = load_run(args.workdir)
        if not hasattr(recipe, "predict_images"):
            raise ValueError(f"recipe {config.recipe!r} does not offer predict_images(config, workdir, images)")
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    paths, images, failed = [], [], 0
    for path in args.images:
        try:
            images.append(read_image(path))
            paths.append(path)
        except UnreadableImage as e:
            print(f"error: {path}: {e}", file=sys.stderr)
            failed += 1
    if images:
        try:
            predictions = recipe.predict_images(config, args.workdir, images)
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        for path, prediction in zip(paths, predictions):
            print(json.dumps({"file": path, **prediction}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
