"""Bring-your-own nuclei images: a folder of images with one COCO-style box file (seed 002).

Layout of `path`:
  annotations.json   {"images": [{"id", "file_name", "width", "height"}, ...],
                      "annotations": [{"image_id", "bbox": [x, y, width, height]}, ...]}
  <file_name> ...    the images: PNG or TIFF (or any format Pillow reads), 8- or 16-bit, grayscale or RGB
  masks/<file_name>  optional ground truth: an instance-label image per image (0 = background, k = instance k)
RGB images are averaged to gray; 16-bit (and other non-8-bit) images are normalised by their 1st and
99.8th percentiles to [0, 255], as microscopy viewers do. Each image is cut into `size` x `size` tiles
(the last row / column of tiles overlaps the previous one so that tiles never leave the image; an image
smaller than a tile is zero-padded); each tile keeps the part of every box that lies in it (parts under
2 pixels wide are dropped) and its slice of the masks.

Malformed input raises `FolderDataError` with one line naming the file and the entry: bad JSON, a
missing key, a box outside its image, an annotation naming an unknown image, a missing or unreadable
image, an image whose size differs from its entry.
"""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

ANNOTATIONS = "annotations.json"


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
    lo, hi = np.percentile(array, [1.0, 99.8])
    return np.round(np.clip((array - lo) / max(hi - lo, 1e-12), 0, 1) * 255).astype(np.uint8)


def _read(path: str, what: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise FolderDataError(f"{path}: {what} file is missing")
    try:
        with Image.open(path) as image:
            return np.asarray(image)
    except Exception as e:  # noqa: BLE001  (Pillow raises many types for broken files)
        raise FolderDataError(f"{path}: cannot read {what} ({' '.join(str(e).split())[:120]})") from None


def read_annotations(path: str) -> list[dict]:
    """[{'file_name', 'width', 'height', 'boxes' [K, 4] int (y0, x0, y1, x1)}] in the order of `images`."""
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
                       "height": int(entry["height"]), "boxes": []})
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
    for image in images:
        image["boxes"] = np.asarray(image["boxes"], np.int32).reshape(-1, 4)
    return images


def _starts(length: int, size: int) -> list[int]:
    if length <= size:
        return [0]
    return sorted(set(list(range(0, length - size, size)) + [length - size]))


def load_folder(path: str, size: int, max_boxes: int) -> dict:
    """Every tile of every image: {'image' [N, size, size, 1] uint8, 'instances' [N, size, size] int32
    (zeros without masks/), 'boxes' [N, max_boxes, 4] int32, 'num_cells' [N], 'has_masks' bool}."""
    records, tiles = read_annotations(path), {"image": [], "instances": [], "boxes": [], "num_cells": []}
    has_masks = os.path.isdir(os.path.join(path, "masks"))
    for r in records:
        image = to_gray_uint8(_read(os.path.join(path, r["file_name"]), "image"))
        if image.shape != (r["height"], r["width"]):
            raise FolderDataError(f"{os.path.join(path, r['file_name'])}: is {image.shape[1]}x{image.shape[0]}, "
                                  f"its entry in {ANNOTATIONS} says {r['width']}x{r['height']}")
        masks = _read(os.path.join(path, "masks", r["file_name"]), "mask") if has_masks else np.zeros_like(image)
        if masks.shape[:2] != image.shape:
            raise FolderDataError(f"{os.path.join(path, 'masks', r['file_name'])}: mask size {masks.shape[:2]} differs "
                                  f"from its image's {image.shape}")
        pad = ((0, max(size - image.shape[0], 0)), (0, max(size - image.shape[1], 0)))
        image, masks = np.pad(image, pad), np.pad(masks.astype(np.int32).reshape(image.shape), pad)
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
