"""Procedural fluorescence-microscopy nuclei (`synthetic_cells`), built offline with numpy and scipy.

Each example is a grayscale image of `count_range` nuclei (8-20 at 64x64, 5-40 at 128x128). A nucleus
is an ellipse (aspect 1-1.8, a fifth of them elongated up to 2.4, any rotation) whose radius is
perturbed by harmonics 2-4 (a quarter of them strongly: bilobed or kidney shapes), so the largest
ellipse inscribed in its box is an imperfect label. Nuclei touch and overlap (centres at least 0.7
of their radius sum apart); a later nucleus occludes an earlier one in the instance masks, while in
the image overlapping fluorescence adds up. Intensity falls off towards the rim (touching nuclei show a
faint dip), with a smooth chromatin texture and a few bright spots, under uneven illumination
(a random linear + quadratic field), then a Gaussian blur and shot + read noise.

Features (fixed shapes, `tfds.features.Tensor`, so reading needs no TensorFlow):
  image      uint8 [S, S, 1]
  instances  uint8 [S, S]          0 = background, k = instance k (1..num_cells)
  boxes      int32 [MAX_CELLS, 4]  (y0, x0, y1, x1) in pixels, y1/x1 exclusive: the tight box of each
                                   instance's visible mask; zero rows pad
  num_cells  int32 []              valid rows of `boxes` (instance k is row k-1)
Instances whose visible part is smaller than MIN_AREA pixels are dropped from image and masks.
The masks serve only evaluation and the fully supervised upper bound; the method reads the boxes.

Example i of split s depends only on `np.random.default_rng([SPLIT_SEEDS[s], i, S])`: preparing twice
gives identical arrays.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds
from scipy import ndimage

from jaxface.data import tfds_builder

MAX_CELLS = 40
MIN_AREA = 6
SPLIT_SEEDS = {'train': 11, 'validation': 12, 'test': 13}
_PLACEMENT_TRIES = 60
_MIN_CENTRE_DISTANCE = 0.7  # x (r_i + r_j): nuclei touch and overlap, but one never swallows another


def _nucleus(rng: np.random.Generator, scale: float) -> dict:
    radius = rng.uniform(3.5, 7.0) * scale
    aspect = rng.uniform(1.8, 2.4) if rng.random() < 0.2 else rng.uniform(1.0, 1.8)
    amplitudes = rng.uniform(0.0, 0.08, 3)
    if rng.random() < 0.25:  # bilobed / kidney-shaped
        amplitudes[rng.integers(0, 2)] = rng.uniform(0.15, 0.28)
    return dict(radius=radius, aspect=aspect, angle=rng.uniform(0, np.pi), amplitudes=amplitudes,
                phases=rng.uniform(0, 2 * np.pi, 3), brightness=rng.uniform(0.45, 1.0))


def _normalised_radius(n: dict, centre: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """rho(y, x): < 1 inside the nucleus, 1 on its outline (polar form of a perturbed ellipse)."""
    dy, dx = yy - centre[0], xx - centre[1]
    c, s = np.cos(n['angle']), np.sin(n['angle'])
    u, v = c * dx + s * dy, -s * dx + c * dy
    ry = n['radius'] / np.sqrt(n['aspect'])
    rx = n['radius'] * np.sqrt(n['aspect'])
    theta = np.arctan2(v, u)
    wobble = 1 + sum(a * np.cos((k + 2) * theta + p) for k, (a, p) in enumerate(zip(n['amplitudes'], n['phases'])))
    return np.sqrt((u / rx) ** 2 + (v / ry) ** 2) / wobble


def _place(rng: np.random.Generator, size: int, count: int, scale: float) -> list[dict]:
    nuclei: list[dict] = []
    for _ in range(_PLACEMENT_TRIES):
        if len(nuclei) == count:
            break
        n = _nucleus(rng, scale)
        n['centre'] = rng.uniform(0, size, 2)
        if all(np.hypot(*(n['centre'] - m['centre'])) >= _MIN_CENTRE_DISTANCE * (n['radius'] + m['radius'])
               for m in nuclei):
            nuclei.append(n)
    return nuclei


def render_example(rng: np.random.Generator, *, size: int, count_range: tuple[int, int]) -> dict:
    scale = size / 64 if size >= 64 else 0.75
    nuclei = _place(rng, size, int(rng.integers(count_range[0], count_range[1] + 1)), scale)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    rho = [_normalised_radius(n, n['centre'], yy, xx) for n in nuclei]
    instances = np.zeros((size, size), np.int32)
    for k, r in enumerate(rho):  # later nuclei occlude earlier ones in the masks
        instances[r <= 1] = k + 1
    kept = [k for k in range(len(nuclei)) if (instances == k + 1).sum() >= MIN_AREA]
    relabel = np.zeros(len(nuclei) + 1, np.int32)
    relabel[[k + 1 for k in kept]] = np.arange(1, len(kept) + 1)
    instances = relabel[instances]
    # fluorescence: soft coverage x rim fall-off x brightness, overlapping nuclei add up
    texture = ndimage.gaussian_filter(rng.normal(size=(size, size)), 1.2)
    texture /= texture.std() + 1e-6
    signal = np.zeros((size, size))
    for k in kept:
        r, n = rho[k], nuclei[k]
        coverage = np.clip((1 - r) * n['radius'] + 0.5, 0, 1)
        signal += coverage * n['brightness'] * (1 - 0.4 * np.minimum(r, 1) ** 2) * (1 + 0.18 * texture)
    spots = (rng.random((size, size)) < 0.01) & (instances > 0)
    signal += 1.5 * ndimage.gaussian_filter(spots.astype(float), 0.7)
    gy, gx = rng.normal(0, 0.25, 2)
    illumination = 1 + gy * (yy / size - 0.5) + gx * (xx / size - 0.5) - rng.uniform(0, 0.4) * (
        ((yy / size - rng.random()) ** 2 + (xx / size - rng.random()) ** 2))
    image = ndimage.gaussian_filter((signal + 0.06) * illumination, rng.uniform(0.5, 1.0))
    image = np.maximum(image, 0)
    image = image + np.sqrt(image) * rng.normal(0, 0.06, image.shape) + rng.normal(0, 0.02, image.shape)
    image = np.clip(image * 200, 0, 255).round().astype(np.uint8)
    boxes = np.zeros((MAX_CELLS, 4), np.int32)
    for k in range(1, len(kept) + 1):
        ys, xs = np.nonzero(instances == k)
        boxes[k - 1] = (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)
    return {'image': image[..., None], 'instances': instances.astype(np.uint8), 'boxes': boxes,
            'num_cells': np.int32(len(kept))}


def generate_example(split: str, index: int, *, size: int, count_range: tuple[int, int]) -> dict:
    tfds_builder.check_choice('split', split, SPLIT_SEEDS)
    return render_example(np.random.default_rng([SPLIT_SEEDS[split], index, size]), size=size,
                          count_range=count_range)


@dataclasses.dataclass(eq=False, kw_only=True)
class SyntheticCellsConfig(tfds_builder.GeneratedConfig):
    """Attributes: size (side S), count_range (min, max nuclei placed), split sizes."""

    size: int = 64
    count_range: tuple[int, int] = (8, 20)


CONFIGS = {
    'cells64': SyntheticCellsConfig(name='cells64', size=64, count_range=(8, 20), num_train=512,
                                    num_validation=96, num_test=192,
                                    description='64x64, 8-20 nuclei; sized for CPU training (the default).'),
    'cells128': SyntheticCellsConfig(name='cells128', size=128, count_range=(5, 40), num_train=4096,
                                     num_validation=256, num_test=512,
                                     description='128x128, 5-40 nuclei; for accelerators.'),
    'smoke': SyntheticCellsConfig(name='smoke', size=32, count_range=(3, 6), num_train=32, num_validation=16,
                                  num_test=16, description='Tiny 32x32 variant for tests.'),
}


class SyntheticCells(tfds_builder.GeneratedBuilder):
    """Procedural fluorescence nuclei with instance masks and boxes."""

    VERSION = tfds.core.Version('1.0.0')
    RELEASE_NOTES = {'1.0.0': 'Initial release.'}
    BUILDER_CONFIGS = list(CONFIGS.values())
    DEFAULT_CONFIG_NAME = 'cells64'

    def _features(self) -> tfds.features.FeaturesDict:
        s = self.builder_config.size
        return tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(shape=(s, s, 1), dtype=np.uint8, encoding=tfds.features.Encoding.ZLIB),
            'instances': tfds.features.Tensor(shape=(s, s), dtype=np.uint8, encoding=tfds.features.Encoding.ZLIB),
            'boxes': tfds.features.Tensor(shape=(MAX_CELLS, 4), dtype=np.int32),
            'num_cells': tfds.features.Tensor(shape=(), dtype=np.int32),
        })

    def _generate_example(self, split: str, index: int) -> dict:
        c = self.builder_config
        return generate_example(split, index, size=c.size, count_range=c.count_range)


def prepare(config_name: str = 'cells64', data_dir: str | None = None) -> SyntheticCells:
    """Generates `synthetic_cells/<config_name>` as array_record files (a no-op when prepared)."""
    return tfds_builder.prepare(SyntheticCells, config_name, data_dir)


def data_source(config_name: str, split: str, data_dir: str | None = None) -> tfds_builder.TypedSource:
    """Random-access, TensorFlow-free source of a prepared split (`source[i]` is example i)."""
    return tfds_builder.open_split(SyntheticCells, config_name, split, data_dir)
