"""Bring-your-own nuclei images: a folder of images with one COCO-style box file (seed 002).

Layout of `path`:
  annotations.json   {"images": [{"id", "file_name", "width", "height"}, ...],
                      "annotations": [{"image_id", "bbox": [x, y, width, height],
                                       "segmentation": [[x1, y1, x2, y2, ...], ...] (optional)}, ...]}
  <file_name> ...    the images: PNG or TIFF (or any format Pillow reads), 8- or 16-bit, grayscale or RGB
  masks/<file_name>  optional ground truth: an instance-label image per image (0 = background, k = instance k)
Ground truth for evaluation (and the fully supervised arm) comes from masks/ if that folder exists, else
from COCO `segmentation` polygons, which then every annotation needs: annotation k of an image (in JSON
order, from 1) is instance k, the union of its polygons; where instances overlap the later one wins.
Polygon pixel convention (Pillow's `ImageDraw.polygon`): vertex (x, y) is the CENTRE of pixel column x,
row y; a pixel belongs to the polygon if its centre lies inside or on the outline, where a sloped edge
crosses each row at the nearest pixel centre. So [2, 2, 6, 2, 6, 5, 2, 5] fills columns 2-6 of rows 2-5
(20 pixels), the outline's pixels included. Vertices may lie up to 0.5 pixel outside [0, width] x [0, height].
RLE segmentations (a dict with 'counts') are refused with one line (write them to masks/ instead).

RGB images are averaged to gray; 16-bit (and other non-8-bit) images are normalised by their 1st and
99.8th percentiles to [0, 255], as microscopy viewers do. Two views of the folder:
  `load_folder`    every image cut into `size` x `size` tiles (the last row / column of tiles overlaps the
                   previous one so that tiles never leave the image); each tile keeps the part of every box
                   that lies in it (parts under 2 pixels wide are dropped) and its slice of the masks
                   (evaluation);
  `load_canvases`  every image whole, zero-padded to one common canvas, with its extent (training):
                   `RandomCrops` cuts from it a `size` x `size` crop per example and step at a random offset
                   inside the image, a pure function of (seed, step, position in the global batch).
An image smaller than `size` is zero-padded to it in both.

Malformed input raises `FolderDataError` with one line naming the file and the entry: bad JSON, a
missing key, a box outside its image, an annotation naming an unknown image, a malformed polygon (an odd
number of coordinates, fewer than 3 points, outside its image), an RLE segmentation, a missing or
unreadable image, an image whose size differs from its entry.
"""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image, ImageDraw

from jaxface.data.pipeline import ShuffledBatches, gather

ANNOTATIONS = "annotations.json"
PERCENTILES = (1.0, 99.8)  # non-8-bit images: these percentiles of the image map to 0 and 255


class FolderDataError(ValueError):
    pass


def to_gray_uint8(array: np.ndarray) -> np.ndarray:
    """[H, W] or [H, W, C] of any dtype -> [H, W] uint8 (RGB averaged; non-8-bit by 1-99.8 % percentiles)."""
    array = np.asarray(array)
    if array.ndim == 3:
        array = array[..., :3].astype(np.float64).mean(-1) if array.dtype != np.uint8 else \
            array[..., :3].mean(-1).round().astype(np.uint8)
    if array.dtype == np.uint8:
        return array
    lo, hi = np.percentile(array, PERCENTILES)
    return np.round(np.clip((array - lo) / max(hi - lo, 1e-12), 0, 1) * 255).astype(np.uint8)


def _read(path: str, what: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise FolderDataError(f"{path}: {what} file is missing")
    try:
        with Image.open(path) as image:
            return np.asarray(image)
    except Exception as e:  # noqa: BLE001  (Pillow raises many types for broken files)
        raise FolderDataError(f"{path}: cannot read {what} ({' '.join(str(e).split())[:120]})") from None


def _polygons(segmentation, where: str, image: dict) -> list[list[float]]:
    """The polygons of one annotation's COCO `segmentation`, checked; FolderDataError names `where`."""
    if isinstance(segmentation, dict):
        raise FolderDataError(f"{where} segmentation is RLE ({', '.join(map(str, segmentation))}); only polygons "
                              f"[[x1, y1, x2, y2, ...], ...] are read (write RLE ground truth to masks/ instead)")
    if not isinstance(segmentation, list) or not segmentation or not all(isinstance(p, list) for p in segmentation):
        raise FolderDataError(f"{where} segmentation is not a list of polygons [[x1, y1, x2, y2, ...], ...]")
    for i, poly in enumerate(segmentation):
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in poly):
            raise FolderDataError(f"{where} segmentation[{i}] holds a value that is not a number")
        if len(poly) % 2:
            raise FolderDataError(f"{where} segmentation[{i}] has an odd number of coordinates ({len(poly)})")
        if len(poly) < 6:
            raise FolderDataError(f"{where} segmentation[{i}] has {len(poly) // 2} point(s); a polygon needs at least 3")
        xs, ys = np.asarray(poly[0::2], float), np.asarray(poly[1::2], float)
        if xs.min() < -0.5 or ys.min() < -0.5 or xs.max() > image["width"] + 0.5 or ys.max() > image["height"] + 0.5:
            raise FolderDataError(f"{where} segmentation[{i}] reaches ({xs.min():g}..{xs.max():g}, {ys.min():g}.."
                                  f"{ys.max():g}), outside its image {image['file_name']} "
                                  f"({image['width']}x{image['height']})")
    return segmentation


def polygon_instances(polygons: list, height: int, width: int) -> np.ndarray:
    """[H, W] int32 instance labels: polygons[k - 1] (a list of polygons, flat [x1, y1, ...]) drawn as k, in
    order (a later instance wins an overlap); the pixel convention of the module docstring."""
    canvas = Image.new("I", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for k, instance in enumerate(polygons, start=1):
        for poly in instance:
            draw.polygon(list(zip(poly[0::2], poly[1::2])), fill=k)
    return np.asarray(canvas, np.int32)


def read_annotations(path: str) -> list[dict]:
    """[{'file_name', 'width', 'height', 'boxes' [K, 4] int (y0, x0, y1, x1), 'polygons'}] in the order of
    `images`; 'polygons': one list of polygons per box, or None when the file has no `segmentation`."""
    json_path = os.path.join(path, ANNOTATIONS)
    if not os.path.isfile(json_path):
        raise FolderDataError(f"{json_path}: not found (config.data.path must hold {ANNOTATIONS})")
    try:
        with open(json_path) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise FolderDataError(f"{json_path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or \
            not isinstance(data.get("annotations"), list):
        raise FolderDataError(f"{json_path}: needs lists 'images' and 'annotations' at the top level")
    images, by_id = [], {}
    for i, entry in enumerate(data["images"]):
        missing = [k for k in ("id", "file_name", "width", "height") if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise FolderDataError(f"{json_path}: images[{i}] has no {missing[0]!r}")
        by_id[entry["id"]] = len(images)
        images.append({"file_name": str(entry["file_name"]), "width": int(entry["width"]),
                       "height": int(entry["height"]), "boxes": [], "polygons": []})
    with_polygons = [j for j, a in enumerate(data["annotations"]) if isinstance(a, dict) and "segmentation" in a]
    for j, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann or "bbox" not in ann:
            raise FolderDataError(f"{json_path}: annotations[{j}] needs 'image_id' and 'bbox'")
        if ann["image_id"] not in by_id:
            raise FolderDataError(f"{json_path}: annotations[{j}] names image_id {ann['image_id']!r}, which is not "
                                  f"in 'images'")
        image = images[by_id[ann["image_id"]]]
        bbox = ann["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            raise FolderDataError(f"{json_path}: annotations[{j}] bbox {bbox!r} is not [x, y, width, height]")
        x, y, w, h = bbox
        if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > image["width"] + 0.5 or y + h > image["height"] + 0.5:
            raise FolderDataError(f"{json_path}: annotations[{j}] bbox {bbox} lies outside its image "
                                  f"{image['file_name']} ({image['width']}x{image['height']})")
        y0, x0 = int(np.floor(y)), int(np.floor(x))
        image["boxes"].append((y0, x0, max(int(np.ceil(y + h)), y0 + 1), max(int(np.ceil(x + w)), x0 + 1)))
        if with_polygons and "segmentation" not in ann:
            raise FolderDataError(f"{json_path}: annotations[{j}] has no 'segmentation', but annotations"
                                  f"[{with_polygons[0]}] has: polygon ground truth needs one per annotation")
        if with_polygons:
            image["polygons"].append(_polygons(ann["segmentation"], f"{json_path}: annotations[{j}]", image))
    for image in images:
        image["boxes"] = np.asarray(image["boxes"], np.int32).reshape(-1, 4)
        image["polygons"] = image["polygons"] if with_polygons else None
    return images


def _starts(length: int, size: int) -> list[int]:
    if length <= size:
        return [0]
    return sorted(set(list(range(0, length - size, size)) + [length - size]))


def read_folder(path: str, size: int) -> tuple[list[dict], bool]:
    """([{'image' [H, W] uint8, 'instances' [H, W] int32, 'boxes' [K, 4]}], has ground truth), each image
    zero-padded to at least `size` x `size`; instances from masks/, else the polygons, else zeros."""
    records, out = read_annotations(path), []
    has_masks = os.path.isdir(os.path.join(path, "masks"))
    has_polygons = bool(records) and records[0]["polygons"] is not None
    for r in records:
        image = to_gray_uint8(_read(os.path.join(path, r["file_name"]), "image"))
        if image.shape != (r["height"], r["width"]):
            raise FolderDataError(f"{os.path.join(path, r['file_name'])}: is {image.shape[1]}x{image.shape[0]}, "
                                  f"its entry in {ANNOTATIONS} says {r['width']}x{r['height']}")
        if has_masks:
            masks = _read(os.path.join(path, "masks", r["file_name"]), "mask")
        else:
            masks = polygon_instances(r["polygons"], *image.shape) if has_polygons else np.zeros_like(image)
        if masks.shape[:2] != image.shape:
            raise FolderDataError(f"{os.path.join(path, 'masks', r['file_name'])}: mask size {masks.shape[:2]} differs "
                                  f"from its image's {image.shape}")
        pad = ((0, max(size - image.shape[0], 0)), (0, max(size - image.shape[1], 0)))
        out.append({"image": np.pad(image, pad), "instances": np.pad(masks.astype(np.int32).reshape(image.shape), pad),
                    "boxes": r["boxes"]})
    return out, has_masks or has_polygons


def load_folder(path: str, size: int, max_boxes: int) -> dict:
    """Every tile of every image: {'image' [N, size, size, 1] uint8, 'instances' [N, size, size] int32
    (zeros without ground truth), 'boxes' [N, max_boxes, 4] int32, 'num_cells' [N], 'has_masks' bool}."""
    records, has_masks = read_folder(path, size)
    tiles = {"image": [], "instances": [], "boxes": [], "num_cells": []}
    for r in records:
        image, masks = r["image"], r["instances"]
        for ty in _starts(image.shape[0], size):
            for tx in _starts(image.shape[1], size):
                b = r["boxes"] - np.array([ty, tx, ty, tx])
                b = np.clip(b, 0, size)
                b = b[((b[:, 2] - b[:, 0]) >= 2) & ((b[:, 3] - b[:, 1]) >= 2)][:max_boxes]
                tiles["boxes"].append(np.concatenate([b, np.zeros((max_boxes - len(b), 4), np.int32)]))
                tiles["num_cells"].append(len(b))
                tiles["image"].append(image[ty:ty + size, tx:tx + size, None])
                tiles["instances"].append(masks[ty:ty + size, tx:tx + size])
    out = {k: np.stack(v).astype(np.int32 if k != "image" else np.uint8) for k, v in tiles.items()}
    return {**out, "has_masks": has_masks}


def load_canvases(path: str, size: int) -> dict:
    """Every image whole: {'image' [N, Hc, Wc, 1] uint8, 'instances' [N, Hc, Wc] int32, 'boxes' [N, K, 4]
    int32 (K: the most boxes of an image), 'num_cells' [N], 'extent' [N, 2] (height, width, at least size),
    'has_masks'}; the canvas Hc x Wc is the largest image's, rounded up to a multiple of the largest power
    of 2 dividing `size` (so that a network that takes `size` takes the canvas)."""
    records, has_masks = read_folder(path, size)
    align = size & -size
    hc, wc = (-(-max(r["image"].shape[i] for r in records) // align) * align for i in (0, 1))
    k = max(1, max(len(r["boxes"]) for r in records))
    canvas = lambda a: np.pad(a, ((0, hc - a.shape[0]), (0, wc - a.shape[1])))  # noqa: E731
    return {"image": np.stack([canvas(r["image"]) for r in records])[..., None],
            "instances": np.stack([canvas(r["instances"]) for r in records]),
            "boxes": np.stack([np.pad(r["boxes"], ((0, k - len(r["boxes"])), (0, 0))) for r in records]),
            "num_cells": np.array([len(r["boxes"]) for r in records], np.int32),
            "extent": np.array([r["image"].shape for r in records], np.int32), "has_masks": has_masks}


CROP_STREAM = 0x63726F70  # separates the crop offsets' random stream from the example order's


def crop_offsets(seed: int, step: int, positions: np.ndarray, extent: np.ndarray, size: int) -> np.ndarray:
    """[n, 2] (y, x) offsets, each uniform over the size x size crops inside its image's extent [n, 2]:
    a pure function of (seed, step, position in the global batch, extent)."""
    high = np.asarray(extent, np.int64).reshape(-1, 2) - size + 1
    return np.array([np.random.default_rng([CROP_STREAM, seed, step, int(p)]).integers(0, h)
                     for p, h in zip(positions, high)], np.int64).reshape(-1, 2)


class RandomCrops(ShuffledBatches):
    """`ShuffledBatches` over canvases (`load_canvases` + labels) whose examples are cut to size x size crops
    at `crop_offsets`: every array with the canvas's height and width behind the batch axis is cropped,
    'extent' is dropped. The batch of a step stays a pure function of (seed, step), whatever the number
    of processes (an example's offset depends on its position in the GLOBAL batch)."""

    def __init__(self, source, *, size: int, **kwargs):
        super().__init__(source, **kwargs)
        self.size = size

    def local_batch(self, step: int, process_index: int = 0, process_count: int = 1) -> dict:
        indices = self.indices(step, process_index, process_count)
        batch = gather(self.source, indices)
        extent, canvas = batch.pop("extent"), batch["image"].shape[1:3]
        first = process_index * (self.global_batch_size // process_count)
        offsets = crop_offsets(self.seed, step, first + np.arange(len(indices)), extent, self.size)
        s = self.size
        for key, value in batch.items():
            if value.shape[1:3] == canvas:
                batch[key] = np.stack([v[y:y + s, x:x + s] for v, (y, x) in zip(value, offsets)])
        return self.transform(batch) if self.transform else batch
