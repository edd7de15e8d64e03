"""Low-quality faces from high-quality ones: blur, downsample, optional noise and JPEG, bicubic back.

For one RGB uint8 image x [S, S, 3] and a factor f (S divisible by f), with parameters drawn per
example from its own generator (`jaxface.data.samplers.example_rng(seed, step, index)`, so the
degraded set is a pure function of (seed, step, example), the same on resume and on any process count):

  sigma ~ U[blur_sigma]          Gaussian blur of x, std sigma in HR pixels (0: none), reflected borders
  b     = box_f(blur_sigma(x))   f x f block average: the down-sampled image [S/f, S/f, 3]
  noise ~ U[noise_sigma]         b + N(0, noise^2) per pixel and channel, in grey levels (0: none)
  q     ~ U{jpeg_quality}        JPEG encode/decode at quality q (0: none)
  lr    = round(clip(., 0, 255)) uint8 [S/f, S/f, 3]
  lr_up = bicubic(lr, S)         Pillow's bicubic resize back to S x S (the "down-sampled set" that a
                                 recognizer without super-resolution reads)

Draw order from the example's generator: sigma, noise, q, then the noise field, so switching JPEG on
does not change the blur of any example.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Sequence

import numpy as np
from PIL import Image

from jaxface.data.images import gaussian_taps, separable_filter_batch, separable_gaussian
from jaxface.data.samplers import example_rng

# The `step` under which evaluation splits are degraded: far beyond any training step, so a test image
# never gets the degradation of a training batch by coincidence of (step, row).
EVAL_STEP = 2**40
_SPLIT_CHUNK = 256  # examples degraded at once by degrade_split


@dataclasses.dataclass(frozen=True)
class Degradation:
    """Ranges the per-example parameters are drawn from (see the module docstring).

    factor: down-sampling factor f >= 1 per side.
    blur_sigma: (lo, hi) Gaussian std in high-resolution pixels, lo <= hi, >= 0.
    noise_sigma: (lo, hi) Gaussian noise std in grey levels of the low-resolution image, >= 0.
    jpeg_quality: (lo, hi) JPEG quality in [1, 95], drawn as an integer; (0, 0) turns JPEG off.
    """

    factor: int = 4
    blur_sigma: tuple[float, float] = (0.5, 1.5)
    noise_sigma: tuple[float, float] = (0.0, 0.0)
    jpeg_quality: tuple[int, int] = (0, 0)

    def __post_init__(self):
        if isinstance(self.factor, bool) or not isinstance(self.factor, int) or self.factor < 1:
            raise ValueError(f"config.degradation.factor={self.factor!r} must be an integer >= 1")
        for key in ("blur_sigma", "noise_sigma", "jpeg_quality"):
            value = tuple(getattr(self, key))
            if len(value) != 2 or not value[0] <= value[1] or value[0] < 0:
                raise ValueError(f"config.degradation.{key}={value} must be a (lo, hi) pair with 0 <= lo <= hi")
            object.__setattr__(self, key, value)
        q = self.jpeg_quality
        if q != (0, 0) and not (1 <= q[0] and q[1] <= 95 and int(q[0]) == q[0] and int(q[1]) == q[1]):
            raise ValueError(f"config.degradation.jpeg_quality={q} must be whole numbers in [1, 95], or (0, 0) for none")

    @classmethod
    def from_config(cls, section) -> "Degradation":
        return cls(factor=section.factor, blur_sigma=tuple(section.blur_sigma),
                   noise_sigma=tuple(section.noise_sigma), jpeg_quality=tuple(section.jpeg_quality))

    def low_size(self, size: int) -> int:
        if size % self.factor:
            raise ValueError(f"image side {size} is not divisible by config.degradation.factor={self.factor}")
        return size // self.factor


def sample_params(degradation: Degradation, rng: np.random.Generator) -> dict:
    """{'sigma', 'noise', 'quality'} of one example (quality 0: no JPEG); draws three numbers from `rng`."""
    sigma = float(rng.uniform(*degradation.blur_sigma))
    noise = float(rng.uniform(*degradation.noise_sigma))
    lo, hi = degradation.jpeg_quality
    quality = int(rng.integers(lo, hi + 1))
    return {"sigma": sigma, "noise": noise, "quality": quality}


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """[H, W, C] -> float32 [H, W, C]: separable Gaussian of std `sigma` (radius ceil(3 sigma), kernel
    normalised to sum 1, borders reflected as in 'abcd|dcba'); the image itself (as float) for sigma 0."""
    x = np.asarray(image, np.float32)
    if sigma <= 0:
        return x
    return separable_gaussian(x, sigma, blur_radius(sigma), axes=(0, 1)).astype(np.float32)


def blur_radius(sigma: float) -> int:
    """ceil(3 sigma), at least 1: the radius of `gaussian_blur`'s kernel."""
    return max(1, int(np.ceil(3.0 * sigma)))


def gaussian_blur_batch(images: np.ndarray, sigmas: Sequence[float]) -> np.ndarray:
    """[N, H, W, C] and one sigma per image -> float32 [N, H, W, C]: image n as `gaussian_blur(images[n],
    sigmas[n])`, bit for bit, in one pass over the batch (`separable_filter_batch`; kernel [1] for sigma 0)."""
    x = np.asarray(images, np.float32)
    taps = [gaussian_taps(s, blur_radius(s), np.float32) if s > 0 else np.ones(1, np.float32) for s in sigmas]
    return separable_filter_batch(x, taps, axes=(1, 2))


def box_downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """[H, W, C] float -> [H/f, W/f, C]: the mean of each f x f block."""
    h, w, c = image.shape
    return image.reshape(h // factor, factor, w // factor, factor, c).mean(axis=(1, 3))


def box_downsample_batch(images: np.ndarray, factor: int) -> np.ndarray:
    """[N, H, W, C] float -> [N, H/f, W/f, C]: `box_downsample` of each image, bit for bit (tested): the
    same reduction over the same two axes, with one more leading axis."""
    n, h, w, c = images.shape
    return images.reshape(n, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """uint8 [H, W, 3] through a JPEG encode/decode at `quality` (Pillow, 4:2:0 chroma)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=int(quality))
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), np.uint8)


def degrade_image(image: np.ndarray, degradation: Degradation, rng: np.random.Generator) -> np.ndarray:
    """uint8 [S, S, 3] -> the low-resolution uint8 [S/f, S/f, 3] (module docstring), drawing from `rng`."""
    degradation.low_size(image.shape[0])
    p = sample_params(degradation, rng)
    low = box_downsample(gaussian_blur(image, p["sigma"]), degradation.factor)
    if p["noise"] > 0:
        low = low + rng.normal(0.0, p["noise"], size=low.shape)
    low = np.clip(np.round(low), 0, 255).astype(np.uint8)
    return jpeg(low, p["quality"]) if p["quality"] > 0 else low


def bicubic_resize(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 [N, h, w, 3], h <= size -> uint8 [N, size, size, 3]: each image as Pillow's bicubic
    `Image.fromarray(im).resize((size, size))` of it alone, bit for bit, in two Pillow calls. Pillow
    resizes in two passes through a uint8 image, horizontally first when the height does not shrink, and
    each pass computes an output row (column) from its own input row (column), with coefficients that
    depend only on the two lengths. So the images stacked top to bottom take the horizontal pass at once,
    and the results side by side the vertical one."""
    images = np.asarray(images, np.uint8)
    n, h, w, c = images.shape
    if h > size:
        raise ValueError(f"bicubic_resize enlarges: image height {h} > size {size}")
    rows = _bicubic(images.reshape(n * h, w, c), size, n * h)  # [N h, size, c]: horizontal pass only
    cols = _bicubic(rows.reshape(n, h, size, c).transpose(1, 0, 2, 3).reshape(h, n * size, c), n * size, size)
    return np.ascontiguousarray(cols.reshape(size, n, size, c).transpose(1, 0, 2, 3))


def _bicubic(image: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC), np.uint8)


def degrade_batch(images: np.ndarray, degradation: Degradation, rngs: Sequence[np.random.Generator]) -> dict:
    """uint8 [N, S, S, 3] and one generator per image -> {'lr' [N, S/f, S/f, 3], 'lr_up' [N, S, S, 3]}: row n
    is, bit for bit, degrade_image(images[n], degradation, rngs[n]) and its bicubic. Each row's draws come
    first, in degrade_image's order; then blur, box average, noise and rounding run once for the batch, JPEG
    row by row, the bicubic in two Pillow calls."""
    images = np.asarray(images, np.uint8)
    if len(rngs) != len(images):
        raise ValueError(f"need one generator per image, got {len(rngs)} for {len(images)} images")
    n, h, w, c = images.shape
    f, low_shape = degradation.factor, (degradation.low_size(h), w // degradation.factor, c)
    # draws per example exactly as degrade_image: its three parameters, then (noise > 0) its noise field
    params = [sample_params(degradation, r) for r in rngs]
    noise = np.zeros((n, *low_shape))
    for i, (p, r) in enumerate(zip(params, rngs)):
        if p["noise"] > 0:
            noise[i] = r.normal(0.0, p["noise"], size=low_shape)
    low = box_downsample_batch(gaussian_blur_batch(images, [p["sigma"] for p in params]), f)
    # float32 low + float64 noise, as in degrade_image; a noiseless example adds 0.0 in float64, which is
    # exact, and rounds to the same integer as its float32 value would
    lr = np.clip(np.round(low + noise), 0, 255).astype(np.uint8)
    for i, p in enumerate(params):
        if p["quality"] > 0:
            lr[i] = jpeg(lr[i], p["quality"])
    return {"lr": lr, "lr_up": bicubic_resize(lr, h)}


def make_augment(degradation: Degradation, key: str = "image"):
    """An `augment` for the batch sources of `jaxface.data.samplers` (fn(batch, rngs) -> batch): adds
    'lr' and 'lr_up' degraded from batch[key], row i from rngs[i] = example_rng(seed, step, row)."""
    def augment(batch: dict, rngs: list) -> dict:
        return {**batch, **degrade_batch(batch[key], degradation, rngs)}

    return augment


def degrade_split(images: np.ndarray, degradation: Degradation, seed: int, step: int = EVAL_STEP) -> dict:
    """A whole evaluation split degraded once: example i from example_rng(seed, step, i) (in chunks of
    _SPLIT_CHUNK examples, which bounds the batched float work's memory and changes no byte)."""
    parts = [degrade_batch(images[i:i + _SPLIT_CHUNK], degradation,
                           [example_rng(seed, step, j) for j in range(i, min(i + _SPLIT_CHUNK, len(images)))])
             for i in range(0, len(images), _SPLIT_CHUNK)]
    return {k: np.concatenate([p[k] for p in parts]) for k in ("lr", "lr_up")}
