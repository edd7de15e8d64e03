"""Single-hand crops of `synthetic_gestures` as an offline image-classification set (8 gesture classes),
and its split into a labeled part and an unlabeled part for semi-supervised training.

Every hand of every scene of a prepared `synthetic_gestures` split becomes one example: a square
around its box (side `context` times the box's longer side, centred on the box; the image's edge
pixels extend it where it leaves the image), cut from the 2x `image_hr` and resized to `size` x `size`
with an area-aware filter. The crops are made in memory from the prepared TFDS split (about 6,500
train, 830 validation and 830 test crops for `lr64`, a few seconds), so they follow
`synthetic_gestures` exactly and need no files of their own.

Features of a crop set (`ArraySource`): image uint8 [N, size, size, 3], label int32 [N] (index into
CLASS_NAMES), scene int32 [N] (the scene's index in its split), hand int32 [N] (its row in the scene).

`labeled_indices` picks `fraction` of each class's examples (at least one) to keep their labels, class-
balanced as in the FixMatch / Mean Teacher protocols: class c's are the first of a permutation seeded by
`[seed, c, crc32("labeled")]`, so a smaller fraction's labeled set is contained in a larger one's. This
choice of what to annotate, before training, is the only read of all labels. `split_labeled` then hands
out the rest WITHOUT labels: the unlabeled source has no 'label' key at all.
"""

from __future__ import annotations

import zlib

import numpy as np
from PIL import Image

from jaxface.data import synthetic_gestures
from jaxface.data.pipeline import ArraySource, SubsetSource
from jaxface.data.samplers import CombinedBatches

CLASS_NAMES = synthetic_gestures.CLASS_NAMES
NUM_CLASSES = synthetic_gestures.NUM_CLASSES
CONFIGS = tuple(synthetic_gestures.CONFIGS)
_READ_CHUNK = 256  # scenes read at a time (bounds memory on the larger configs)


def crop_hands(scenes: dict, *, size: int, context: float = 1.2) -> dict:
    """The hand crops of a batch of scenes ({'image_hr', 'boxes', 'labels', 'num_hands'}, with a
    leading scene axis): {'image', 'label', 'hand'} and the row of the scene each crop comes from, 'row'."""
    if size < 4 or not context >= 1.0:
        raise ValueError(f"crop size must be >= 4 and context >= 1; got size={size}, context={context}")
    out = {"image": [], "label": [], "hand": [], "row": []}
    for row, (image, boxes, labels, count) in enumerate(
            zip(scenes["image_hr"], scenes["boxes"], scenes["labels"], scenes["num_hands"])):
        side_px = image.shape[0]
        for hand in range(int(count)):
            y0, x0, y1, x1 = (np.asarray(boxes[hand], np.float64) * side_px)
            half = max(y1 - y0, x1 - x0) * context / 2
            cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
            pad = int(np.ceil(half)) + 1
            padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
            box = (cx - half + pad, cy - half + pad, cx + half + pad, cy + half + pad)  # PIL: left, top, right, bottom
            crop = Image.fromarray(padded).resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=2.0)
            out["image"].append(np.asarray(crop, np.uint8))
            out["label"].append(int(labels[hand]))
            out["hand"].append(hand)
            out["row"].append(row)
    return {"image": np.stack(out["image"]) if out["image"] else np.zeros((0, size, size, 3), np.uint8),
            **{k: np.asarray(out[k], np.int32) for k in ("label", "hand", "row")}}


def load(config_name: str, split: str, data_dir: str | None, *, size: int, context: float = 1.2,
         limit: int | None = None) -> ArraySource:
    """The crops of every hand in the prepared `synthetic_gestures/<config_name>` split (prepare it first,
    `synthetic_gestures.prepare`), in scene order; `limit` reads only the first scenes."""
    source = synthetic_gestures.data_source(config_name, split, data_dir)
    n = len(source) if limit is None else min(limit, len(source))
    parts = []
    for start in range(0, n, _READ_CHUNK):
        examples = source.__getitems__(list(range(start, min(start + _READ_CHUNK, n))))
        scenes = {k: np.stack([e[k] for e in examples]) for k in ("image_hr", "boxes", "labels", "num_hands")}
        crops = crop_hands(scenes, size=size, context=context)
        crops["scene"] = crops.pop("row") + start
        parts.append(crops)
    return ArraySource({k: np.concatenate([p[k] for p in parts]) for k in ("image", "label", "scene", "hand")})


def labeled_indices(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of the labeled examples: per class, max(1, round(fraction * n_c)) of its n_c
    examples, the first of a permutation seeded by [seed, c, crc32('labeled')] (nested in fraction)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"labeled fraction must be in (0, 1]; got {fraction}")
    labels, keep = np.asarray(labels), []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        order = np.random.default_rng([seed, int(c), zlib.crc32(b"labeled")]).permutation(len(members))
        keep.append(members[order[:max(1, int(round(fraction * len(members))))]])
    return np.sort(np.concatenate(keep))


def split_labeled(source: ArraySource, labeled: np.ndarray) -> tuple[SubsetSource, ArraySource]:
    """(the examples `labeled` (e.g. `labeled_indices`) with labels, the others with every feature but
    'label'): what training reads of the unlabeled part cannot depend on its labels."""
    rest = np.setdiff1d(np.arange(len(source)), labeled)
    unlabeled = ArraySource({k: v[rest] for k, v in source.arrays.items() if k != "label"})
    return SubsetSource(source, np.asarray(labeled)), unlabeled


# --- augmentation (`samplers.CombinedBatches(augment=...)`: rngs[i] = example_rng(seed, step, row)) --------
def weak_view(image: np.ndarray, rng: np.random.Generator, *, flip: float, shift: int) -> np.ndarray:
    """A mirror (when `flip`, half the time: the gestures do not depend on the hand's side) and a shift of
    up to `shift` pixels each way, the edge pixels extending the image."""
    if flip and rng.random() < 0.5:
        image = image[:, ::-1]
    s = int(shift)
    if s:
        dy, dx = rng.integers(-s, s + 1, 2)
        padded = np.pad(image, ((s, s), (s, s), (0, 0)), mode="edge")
        image = padded[s + dy:s + dy + image.shape[0], s + dx:s + dx + image.shape[1]]
    return image


def strong_view(image: np.ndarray, rng: np.random.Generator, *, flip: float, shift: int, colour_jitter: float,
                noise: float, cutout: float) -> np.ndarray:
    """The weak view, then contrast and brightness in [1 - j, 1 + j], per-channel gains in [1 - j/2, 1 + j/2],
    Gaussian noise of std `noise` (grey levels) and a grey square of side `cutout` x the image side."""
    x, j = weak_view(image, rng, flip=flip, shift=shift).astype(np.float32), colour_jitter
    mean = x.mean()
    x = (x - mean) * rng.uniform(1 - j, 1 + j) + mean * rng.uniform(1 - j, 1 + j)
    x = x * rng.uniform(1 - j / 2, 1 + j / 2, 3) + rng.normal(0, noise, x.shape)
    side = int(round(cutout * x.shape[0]))
    if side:
        cy, cx = rng.integers(0, x.shape[0], 2)
        x[max(0, cy - side // 2):cy + (side + 1) // 2, max(0, cx - side // 2):cx + (side + 1) // 2] = 127.0
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def augmenters(**options) -> dict:
    """{'labeled': weak view of 'image', 'unlabeled': weak view of 'image' + strong view 'image_strong'}, as
    fn(batch, rngs) -> batch; `options` are `strong_view`'s keyword arguments. Row i is, bit for bit, what
    `weak_view` (then `strong_view`) makes of it from rngs[i]; the views are made for the whole batch at once
    (`weak_views`, `strong_views`) after each row's draws, in their order, from its generator."""
    weak = {k: options[k] for k in ("flip", "shift")}

    def labeled(batch, rngs):
        return {**batch, "image": weak_views(batch["image"], [weak_draws(r, **weak) for r in rngs])}

    def unlabeled(batch, rngs):
        images = np.asarray(batch["image"])
        draws = [(weak_draws(r, **weak), strong_draws(r, images.shape[1:], **options)) for r in rngs]
        return {**batch, "image": weak_views(images, [d[0] for d in draws]),
                "image_strong": strong_views(images, [d[1] for d in draws])}

    return {"labeled": labeled, "unlabeled": unlabeled}


def weak_draws(rng: np.random.Generator, *, flip: float, shift: int) -> tuple[bool, int, int]:
    """(mirror, dy, dx): what `weak_view` draws from `rng`, in its order."""
    mirror = bool(flip) and rng.random() < 0.5
    s = int(shift)
    dy, dx = rng.integers(-s, s + 1, 2) if s else (0, 0)
    return mirror, int(dy), int(dx)


def weak_views(images: np.ndarray, draws: list) -> np.ndarray:
    """[N, H, W, C] and one `weak_draws` per image -> [N, H, W, C], image n as `weak_view` makes it, by one
    gather: out[n, y, x] = images[n, clip(y + dy_n), m_n(clip(x + dx_n))], clip to [0, H - 1] (resp.
    [0, W - 1]), m_n(x) = W - 1 - x when mirrored: reading the edge-padded image at an offset is reading
    the image at the clipped index, and the mirror is applied before the shift."""
    images = np.asarray(images)
    n, h, w, c = images.shape
    mirror, dy, dx = (np.asarray(v)[:, None] for v in zip(*draws))  # each [N, 1]
    rows = np.clip(np.arange(h) + dy, 0, h - 1)
    cols = np.clip(np.arange(w) + dx, 0, w - 1)
    cols = np.where(mirror, w - 1 - cols, cols)
    # [N, H, W]: for each output pixel its row in the images viewed as [N H W, C]
    pixel = (np.arange(n)[:, None, None] * h + rows[:, :, None]) * w + cols[:, None, :]
    return np.take(images.reshape(n * h * w, c), pixel, axis=0)  # a flat take: ~4x faster than 3 index arrays


def strong_draws(rng: np.random.Generator, shape: tuple, *, flip: float, shift: int, colour_jitter: float,
                 noise: float, cutout: float) -> dict:
    """What `strong_view` draws from `rng` for an image of `shape` [H, W, C], in its order: its weak view's
    draws, contrast, brightness, gains [3], the noise field [H, W, C] and (side > 0) the cutout square's
    centre; 'side' (not drawn) is the square's side."""
    j = colour_jitter
    d = {"weak": weak_draws(rng, flip=flip, shift=shift)}
    d["contrast"] = rng.uniform(1 - j, 1 + j)
    d["brightness"] = rng.uniform(1 - j, 1 + j)
    d["gains"] = rng.uniform(1 - j / 2, 1 + j / 2, 3)
    d["noise"] = rng.normal(0, noise, shape)
    d["side"] = int(round(cutout * shape[0]))
    d["centre"] = rng.integers(0, shape[0], 2) if d["side"] else (0, 0)
    return d


def strong_views(images: np.ndarray, draws: list) -> np.ndarray:
    """uint8 [N, H, W, C] and one `strong_draws` per image -> uint8 [N, H, W, C], image n as `strong_view`
    makes it: x = weak view (float32), m = mean(x) per image, then
    clip(round(((x - m) * contrast + m * brightness) * gains + noise), 0, 255), the cutout square 127 first."""
    x = weak_views(images, [d["weak"] for d in draws]).astype(np.float32)
    n, h, w = x.shape[:3]
    # each image's H W C contiguous values summed pairwise as x[n].mean() sums them: the same float32 (tested)
    m = x.mean(axis=(1, 2, 3), keepdims=True)
    # float32 scalars: in strong_view a Python float meets float32 values, which NumPy 2 computes in float32
    contrast, brightness = (np.asarray([d[k] for d in draws], np.float32).reshape(n, 1, 1, 1)
                            for k in ("contrast", "brightness"))
    x = (x - m) * contrast + m * brightness
    # float64 from here on, as there (the gains and the noise are float64)
    x = x * np.stack([d["gains"] for d in draws])[:, None, None] + np.stack([d["noise"] for d in draws])
    side = np.asarray([d["side"] for d in draws])[:, None]
    cy, cx = (np.asarray([d["centre"][k] for d in draws])[:, None] for k in (0, 1))
    inside_y = (np.arange(h) >= cy - side // 2) & (np.arange(h) < cy + (side + 1) // 2)  # [N, H]
    inside_x = (np.arange(w) >= cx - side // 2) & (np.arange(w) < cx + (side + 1) // 2)  # [N, W]
    x[inside_y[:, :, None] & inside_x[:, None, :]] = 127.0
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def semi_supervised_batches(labeled, unlabeled=None, *, batch_size: int, unlabeled_ratio: int, seed: int,
                            augment: dict) -> CombinedBatches:
    """Per step `batch_size` labeled examples ('labeled/image' weak view, 'labeled/label') and, given an
    unlabeled source, `unlabeled_ratio` times as many unlabeled ones ('unlabeled/image' weak view,
    'unlabeled/image_strong'); nothing else reaches the step. A pure function of (seed, step)."""
    both = unlabeled is not None
    streams = {"labeled": (labeled, batch_size),
               **({"unlabeled": (unlabeled, batch_size * unlabeled_ratio)} if both else {})}
    keep = ["labeled/image", "labeled/label", *(["unlabeled/image", "unlabeled/image_strong"] if both else [])]
    views = {k: fn for k, fn in augmenters(**augment).items() if k in streams}
    return CombinedBatches(streams, seed=seed, augment=views, transform=lambda batch: {k: batch[k] for k in keep})
