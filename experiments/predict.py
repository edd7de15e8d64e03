r"""Predicts with a finished run: one JSON line per image on stdout.

  python -m experiments.predict --workdir=runs/mt face1.png face2.jpg    # attributes
  python -m experiments.predict --workdir=runs/distill photos/           # boxes; a folder: its images

The run's `config.json` names its recipe; the recipe module provides
`predict_images(config, workdir, images: list[np.ndarray [H, W, 3] uint8]) -> list[dict]` (a later
recipe registers itself by defining that function). Every file is read here: a missing, empty,
unreadable, non-image or absurdly large file gets one line on stderr naming it, the others are still
predicted, and the exit code is 1 if any file failed (2 if the run itself cannot be used).
Grayscale, palette, alpha, 16-bit and float images are converted to 8-bit RGB; images larger than
`MAX_SIDE` are downscaled before the recipe resizes them to its input. A recipe may set
`READ_IMAGES = {'max_side': N or None (no downscaling), 'percentiles': (lo, hi) or None}` to read its
inputs otherwise (mutual: full size, so that its masks match the files pixel for pixel; 16-bit and float
images mapped from these percentiles to 0..255, as its training data).

Images in predictions (any recipe): a prediction value that is a numpy array is an image to save, not a
JSON field: uint8 [H, W, 3] (RGB, e.g. sr_recognition's 'restored') or integer [H, W] (a label map, e.g.
mutual's instance 'mask': 0 = background, k = instance k; saved as an 8-bit PNG when its largest value is
<= 255, else 16-bit; values outside 0..65535 are refused). See `save_image_outputs`: they are written as
'<input name>.<key>.png' into `--image_dir`, and the JSON line gives each path as '<key>_png'. Without
`--image_dir` they are dropped with a note, unless the recipe names them in `SAVED_IMAGES` (the images a
prediction is for, mutual's ('mask',)): then they go to `<workdir>/predictions/`.

`--draw_dir=DIR` also writes, for each image whose prediction has 'detections', a PNG into DIR of the
image as read here (EXIF orientation applied, at the size whose pixels `box_xyxy` uses) with each box
drawn and labelled "<class> <score>"; see `draw_file_names` for the file names. A recipe without boxes
(attributes) draws nothing and says so once on stderr.

`--image_dir=DIR` writes the images a prediction carries (sr_recognition: the super-resolved face,
'restored'; mutual: the instance mask, 'mask') as '<input name>.<key>.png' into DIR and puts each path in the
JSON line ('restored_png', 'mask_png').

`--verify a.png b.png` (recipes whose predictions carry an 'embedding', e.g. sr_recognition) prints one
line {'files', 'distance', 'threshold', 'same'}: the Euclidean distance of the two embeddings and whether
it is <= the threshold the run chose on validation identities (results.json 'verify').
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
DEFAULT_IMAGE_DIR = "predictions"  # <workdir>/predictions/: a recipe's SAVED_IMAGES without --image_dir
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")  # read from folders


class UnreadableImage(ValueError):
    pass


def _to_uint8(array: np.ndarray, percentiles: tuple[float, float] | None = None) -> np.ndarray:
    """Integer images wider than 8 bits are scaled by their type's (or 16-bit) range; float images in [0, 1]
    by 255, others clipped to [0, 255]. With `percentiles` (lo, hi): both map those percentiles of the
    image to 0 and 255 (clipped), as `jaxface.data.cell_folder.to_gray_uint8` does."""
    if array.dtype == np.uint8:
        return array
    if percentiles is not None:
        lo, hi = np.percentile(array, percentiles)
        return np.round(np.clip((array - lo) / max(hi - lo, 1e-12), 0, 1) * 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        top = 65535.0 if array.max(initial=0) <= 65535 else float(np.iinfo(array.dtype).max)
        return np.round(np.clip(array, 0, None) / top * 255.0).astype(np.uint8)
    array = np.nan_to_num(array.astype(np.float64))
    scale = 255.0 if array.max(initial=0.0) <= 1.0 else 1.0
    return np.round(np.clip(array * scale, 0, 255)).astype(np.uint8)


def read_image(path: str, max_side: int | None = MAX_SIDE, percentiles: tuple[float, float] | None = None) -> np.ndarray:
    """An image file -> RGB uint8 [H, W, 3] with max(H, W) <= max_side (None: as stored); 16-bit and float
    grey by `_to_uint8(..., percentiles)`. UnreadableImage says why not."""
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
            if max_side:
                image.draft("RGB", (max_side, max_side))  # JPEG decodes directly at a reduced scale
            image.load()
            image = ImageOps.exif_transpose(image)  # as the camera held it (EXIF orientation)
            if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit or float grey
                grey = _to_uint8(np.asarray(image), percentiles)
                image = Image.fromarray(grey, "L")
            image = image.convert("RGB")
            if max_side:
                image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
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


def draw_file_names(paths: list[str]) -> list[str]:
    """One distinct PNG file name per input path (a path given twice gets two): the file's name, with
    '.png' appended unless it ends so; where names clash (case-insensitively, for case-insensitive file
    systems) the clashing ones are prefixed by as many of their parent folders as tell them apart, joined
    by '__' ('a/x.jpg', 'b/x.jpg' -> 'a__x.jpg.png', 'b__x.jpg.png'), and what still clashes gets '-2', '-3'."""
    parts = [[p for p in os.path.abspath(path).split(os.sep) if p] or ["image"] for path in paths]
    depth = [1] * len(paths)

    def name(i):
        joined = "__".join(parts[i][-depth[i]:])
        return joined if joined.lower().endswith(".png") else joined + ".png"

    while True:
        groups = {}
        for i in range(len(paths)):
            groups.setdefault(name(i).casefold(), []).append(i)
        # the same path given twice is told apart by the number below, not by its folders
        deeper = [i for group in groups.values() if len({tuple(parts[j]) for j in group}) > 1
                  for i in group if depth[i] < len(parts[i])]
        if not deeper:
            break
        for i in deeper:
            depth[i] += 1
    names, taken = [], set()
    for i in range(len(paths)):
        candidate, count = name(i), 1
        while candidate.casefold() in taken:
            count += 1
            candidate = f"{name(i)[:-4]}-{count}.png"
        taken.add(candidate.casefold())
        names.append(candidate)
    return names


def check_output_dir(path: str, flag: str = "--draw_dir") -> None:
    """ValueError with one line unless `path` is, or can be created as, a writable folder (nothing is made)."""
    if not path:
        raise ValueError(f"{flag} must name a folder, got an empty string")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{flag}={path} is an existing file, not a folder")
    parent = os.path.abspath(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"{flag}={path} cannot be created: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{flag}={path} cannot be written: no write permission in {parent}")


def png_image(array: np.ndarray) -> Image.Image:
    """The PNG of an image a prediction carries: uint8 [H, W, 3] as RGB; an integer label map [H, W] as 8-bit
    grey when its values fit (<= 255), else 16-bit grey; ValueError for anything else."""
    if array.ndim == 3 and array.shape[-1] == 3 and array.dtype == np.uint8:
        return Image.fromarray(array)
    if array.ndim == 2 and np.issubdtype(array.dtype, np.integer):
        lo, hi = int(array.min(initial=0)), int(array.max(initial=0))
        if lo < 0 or hi > 65535:
            raise ValueError(f"label values {lo}..{hi} do not fit a 16-bit PNG (0..65535)")
        return Image.fromarray(array.astype(np.uint8 if hi <= 255 else np.uint16))
    raise ValueError(f"a {array.dtype} array of shape {array.shape} is neither uint8 [H, W, 3] nor an integer [H, W] "
                     f"label map")


def save_image_outputs(image_dir: str | None, paths: list[str], predictions: list[dict]) -> int:
    """Replaces every image a prediction carries (a numpy array: uint8 [H, W, 3], e.g. 'restored', or an
    integer label map [H, W], e.g. 'mask'; see `png_image`) by the path of the PNG written for it into
    `image_dir` ('<input name>.<key>.png', JSON key '<key>_png'), or drops it (saying so once) when no folder
    is given; returns the number of files that could not be written."""
    keys = sorted({k for p in predictions for k, v in p.items() if isinstance(v, np.ndarray)})
    if keys and image_dir is None:
        print(f"note: the predictions carry images ({', '.join(keys)}); --image_dir=DIR writes them", file=sys.stderr)
    failed = written = 0
    for name, prediction in zip(draw_file_names(paths), predictions):
        for key in keys:
            image = prediction.pop(key, None)
            if image is None or image_dir is None:
                continue
            target = os.path.join(image_dir, f"{name[:-len('.png')]}.{key}.png")
            try:
                png = png_image(image)
                os.makedirs(image_dir, exist_ok=True)
                png.save(target)
                prediction[f"{key}_png"] = target
                written += 1
            except (OSError, ValueError) as e:
                print(f"error: cannot write {target}: {getattr(e, 'strerror', None) or e}", file=sys.stderr)
                failed += 1
    if written:
        print(f"wrote {written} image(s) ({', '.join(keys)}) into {image_dir}", file=sys.stderr)
    return failed


def draw_predictions(draw_dir: str, paths: list[str], images: list[np.ndarray], predictions: list[dict]) -> int:
    """Writes one PNG into draw_dir per prediction with 'detections'; the number of files that failed."""
    from jaxface.evaluation.plots import save_detections_image

    drawable = [i for i, prediction in enumerate(predictions) if "detections" in prediction]
    if not drawable:
        print("note: --draw_dir: these predictions have no boxes ('detections'), so there is nothing to draw",
              file=sys.stderr)
        return 0
    names = draw_file_names([paths[i] for i in drawable])
    # colours by the sorted classes found: distinct for up to len(PREDICTION_COLOURS) classes per call
    classes = sorted({str(d["class"]) for i in drawable for d in predictions[i]["detections"]})
    failed = 0
    for i, name in zip(drawable, names):
        try:
            save_detections_image(os.path.join(draw_dir, name), images[i], predictions[i]["detections"],
                                  class_names=classes)
        except OSError as e:
            print(f"error: {paths[i]}: cannot write {os.path.join(draw_dir, name)}: {e.strerror or e}", file=sys.stderr)
            failed += 1
    print(f"drew {len(drawable) - failed} image(s) with their boxes into {draw_dir}", file=sys.stderr)
    return failed


def verify_threshold(workdir: str) -> float:
    """The distance threshold the run chose on validation identities (results.json 'verify')."""
    path = os.path.join(workdir, "results.json")
    verify = json.load(open(path)).get("verify") if os.path.isfile(path) else None
    if not verify or "threshold" not in verify:
        raise ValueError(f"{path} has no verification threshold ('verify'): --verify needs a run of a recipe "
                         f"that embeds faces (sr_recognition)")
    return float(verify["threshold"])


def verify_pair(paths: list[str], predictions: list[dict], threshold: float) -> dict:
    """{'files', 'distance' = ||e_a - e_b||_2, 'threshold', 'same': distance <= threshold} of two predictions
    that carry an 'embedding'."""
    if any("embedding" not in p for p in predictions):
        raise ValueError("--verify needs predictions with an 'embedding'")
    a, b = (np.asarray(p["embedding"], np.float64) for p in predictions)
    distance = float(np.linalg.norm(a - b))
    return {"files": paths, "distance": round(distance, 5), "threshold": round(threshold, 5),
            "same": bool(distance <= threshold)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Predict with a finished run (attributes, boxes, instance masks) on "
                                                 "image files: one JSON line per image on stdout.")
    parser.add_argument("--workdir", required=True, help="workdir of a finished experiments.run run")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...) or folders of them")
    parser.add_argument("--draw_dir", metavar="DIR", default=None,
                        help="also write each image with its boxes drawn and labelled as a PNG into DIR "
                             "(recipes that predict boxes)")
    parser.add_argument("--image_dir", metavar="DIR", default=None,
                        help="write the images a prediction carries as '<input name>.<key>.png' into DIR; the JSON "
                             "line gives each file's path as '<key>_png'. mutual: the instance mask 'mask' (0 = "
                             "background, k = instance k; 8-bit PNG, 16-bit above 255 instances), written even "
                             f"without this flag, into WORKDIR/{DEFAULT_IMAGE_DIR}/; sr_recognition: the "
                             "super-resolved face 'restored', written only with this flag")
    parser.add_argument("--verify", action="store_true",
                        help="two face images: print their embeddings' distance and the same/different verdict at "
                             "the threshold the run chose on validation identities (recipes with embeddings)")
    args = parser.parse_args(argv)
    args.images = expand_folders(args.images)
    try:
        if args.verify and len(args.images) != 2:
            raise ValueError(f"--verify compares exactly two images; got {len(args.images)}")
        for flag, folder in (("--draw_dir", args.draw_dir), ("--image_dir", args.image_dir)):
            if folder is not None:
                check_output_dir(folder, flag)
        from jaxface.train.driver import final_model_workdir

        config, recipe = load_run(args.workdir)
        workdir = final_model_workdir(config, args.workdir)  # the first seed's run of a several-seed run
        threshold = verify_threshold(workdir) if args.verify else None
        if not hasattr(recipe, "predict_images"):
            raise ValueError(f"recipe {config.recipe!r} does not offer predict_images(config, workdir, images)")
        if args.image_dir is None and getattr(recipe, "SAVED_IMAGES", ()):  # the images predictions are for
            args.image_dir = os.path.join(args.workdir, DEFAULT_IMAGE_DIR)
            check_output_dir(args.image_dir, "--image_dir (default)")
        read_options = dict(getattr(recipe, "READ_IMAGES", {}))
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    paths, images, failed = [], [], 0
    for path in args.images:
        try:
            images.append(read_image(path, **read_options))
            paths.append(path)
        except UnreadableImage as e:
            print(f"error: {path}: {e}", file=sys.stderr)
            failed += 1
    if images:
        try:
            predictions = recipe.predict_images(config, workdir, images)
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        failed += save_image_outputs(args.image_dir, paths, predictions)
        if args.verify:
            if failed:
                return 1
            try:
                print(json.dumps(verify_pair(paths, predictions, threshold)), flush=True)
            except ValueError as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            return 0
        for path, prediction in zip(paths, predictions):
            print(json.dumps({"file": path, **prediction}), flush=True)
        if args.draw_dir is not None:
            failed += draw_predictions(args.draw_dir, paths, images, predictions)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
