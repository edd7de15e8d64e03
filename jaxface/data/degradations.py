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

from jaxface.data.images import separable_gaussian
from jaxface.data.samplers import example_rng

# The `step` under which evaluation splits are degraded: far beyond any training step, so a test image
# never gets the degradation of a training batch by coincidence of (step, row).
EVAL_STEP = 2**40


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
    return separable_gaussian(x, sigma, max(1, int(np.ceil(3.0 * sigma))), axes=(0, 1)).astype(np.float32)


def box_downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """[H, W, C] float -> [H/f, W/f, C]: the mean of each f x f block."""
    h, w, c = image.shape
    return image.reshape(h // factor, factor, w // factor, factor, c).mean(axis=(1, 3))


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
    """uint8 [N, h, w, 3] -> uint8 [N, size, size, 3] with Pillow's bicubic filter."""
    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BICUBIC), np.uint8)
                     for im in np.asarray(images, np.uint8)])


def degrade_batch(images: np.ndarray, degradation: Degradation, rngs: Sequence[np.random.Generator]) -> dict:
    """uint8 [N, S, S, 3] and one generator per image -> {'lr' [N, S/f, S/f, 3], 'lr_up' [N, S, S, 3]}."""
    images = np.asarray(images, np.uint8)
    if len(rngs) != len(images):
        raise ValueError(f"need one generator per image, got {len(rngs)} for {len(images)} images")
    lr = np.stack([degrade_image(im, degradation, r) for im, r in zip(images, rngs)])
    return {"lr": lr, "lr_up": bicubic_resize(lr, images.shape[1])}


def make_augment(degradation: Degradation, key: str = "image"):
    """An `augment` for the batch sources of `jaxface.data.samplers` (fn(batch, rngs) -> batch): adds
    'lr' and 'lr_up' degraded from batch[key], row i from rngs[i] = example_rng(seed, step, row)."""
    def augment(batch: dict, rngs: list) -> dict:
        return {**batch, **degrade_batch(batch[key], degradation, rngs)}

    return augment


def degrade_split(images: np.ndarray, degradation: Degradation, seed: int, step: int = EVAL_STEP) -> dict:
    """A whole evaluation split degraded once: example i from example_rng(seed, step, i)."""
    return degrade_batch(images, degradation, [example_rng(seed, step, i) for i in range(len(images))])
