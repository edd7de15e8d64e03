"""Per-identity and per-image parameters of `synthetic_faces`.

`sample_identity(seed, k)`: everything fixed for person k (geometry, colouring, hair, gender, base age
and hence face_value), a pure function of `np.random.default_rng([seed, k])`.
`sample_example(rng, person, subset)`: everything that varies between images of that person (pose by
subset, expression, age +-2 years, accessories, lighting, background, quality).
The order of the draws from each generator is part of the data set: reordering them changes every example.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from typing import Mapping

import numpy as np

from jaxface.data.faces.labels import (AGE_RANGE, ASYMMETRIES, FRONTAL_POSE_LIMIT, FRONTAL_POSE_SD,
                                       LARGE_POSE_LIMIT, PROPORTIONS, SUBSETS, face_value_score)

_SKIN_TONES = np.array([[246, 214, 190], [232, 190, 160], [205, 158, 120], [165, 115, 80],
                        [120, 80, 55], [88, 58, 40]], np.float32)
_HAIR_COLOURS = np.array([[30, 24, 20], [60, 40, 28], [105, 70, 40], [150, 110, 65],
                          [205, 170, 110], [140, 60, 30]], np.float32)
_HAIR_COLOUR_PROBS = (0.3, 0.25, 0.18, 0.1, 0.1, 0.07)
_EYE_COLOURS = np.array([[70, 45, 25], [110, 75, 40], [60, 110, 160], [80, 125, 85],
                         [110, 120, 125]], np.float32)


@dataclasses.dataclass(frozen=True)
class IdentityParams:
    """Everything fixed for one person. Lengths are fractions of the head half-width `a` (x) or
    half-height `b` (y); colours are RGB floats in [0, 255]."""

    identity: int
    gender: int
    base_age: float
    skin: tuple
    hair: tuple
    eye_colour: tuple
    lips: tuple
    half_width: float      # a, as a fraction of the canvas side
    depth: float           # c / a
    jaw_taper: float       # relative narrowing of the face outline from cheek to chin
    proportions: Mapping[str, float]   # PROPORTIONS names -> value
    asymmetries: Mapping[str, float]   # ASYMMETRIES names -> value
    eye_open: float        # eye height / eye width at age 18
    brow_thickness: float  # / b
    lip_thickness: float   # / b at age 18
    nose_width: float      # half width / a
    ear_size: float        # ear half-height / b
    hair_style: str        # 'short', 'bob' or 'long'
    hairline: float        # v of the hairline at the midline (-1 top of head, 0 eye level)
    fringe: bool
    part_tilt: float
    balding: float         # hairline recession per year above 30, in v units
    greying_onset: float   # age at which hair starts to grey
    stubble: bool
    face_value: float


def _uniform_proportion(rng: np.random.Generator, name: str) -> float:
    _, ideal, half = next(p for p in PROPORTIONS if p[0] == name)
    return float(rng.uniform(ideal - half, ideal + half))


@functools.lru_cache(maxsize=4096)
def sample_identity(seed: int, identity: int) -> IdentityParams:
    """Identity `identity`'s fixed parameters, from `np.random.default_rng([seed, identity])` alone."""
    if identity < 0:
        raise ValueError(f'identity must be >= 0; got {identity}')
    rng = np.random.default_rng([seed, identity])
    gender = int(rng.integers(2))
    male = gender == 1
    tone = rng.uniform(0, len(_SKIN_TONES) - 1)
    low = int(tone)
    skin = _SKIN_TONES[low] + (tone - low) * (_SKIN_TONES[min(low + 1, len(_SKIN_TONES) - 1)] - _SKIN_TONES[low])
    skin = np.clip(skin + rng.normal(0, 6, 3), 0, 255)
    hair = _HAIR_COLOURS[rng.choice(len(_HAIR_COLOURS), p=_HAIR_COLOUR_PROBS)] + rng.normal(0, 8, 3)
    eye_colour = _EYE_COLOURS[rng.integers(len(_EYE_COLOURS))] + rng.normal(0, 6, 3)
    lips = skin * np.array([0.82, 0.6, 0.6]) + np.array([25, 5, 5])
    # Read-only mappings: instances are cached and shared.
    proportions = types.MappingProxyType({name: _uniform_proportion(rng, name) for name, _, _ in PROPORTIONS})
    asymmetries = types.MappingProxyType(
        {name: float(np.clip(rng.normal(0, sd), -2.5 * sd, 2.5 * sd)) for name, sd in ASYMMETRIES})
    if male:
        hair_style = str(rng.choice(['short', 'bob', 'long'], p=[0.9, 0.05, 0.05]))
    else:
        hair_style = str(rng.choice(['short', 'bob', 'long'], p=[0.1, 0.3, 0.6]))
    fringe = bool(rng.random() < (0.15 if male else 0.4))
    return IdentityParams(
        identity=identity,
        gender=gender,
        base_age=float(rng.uniform(AGE_RANGE[0] + 2, AGE_RANGE[1] - 2)),
        skin=tuple(float(v) for v in skin),
        hair=tuple(float(v) for v in np.clip(hair, 0, 255)),
        eye_colour=tuple(float(v) for v in np.clip(eye_colour, 0, 255)),
        lips=tuple(float(v) for v in np.clip(lips, 0, 255)),
        half_width=float(rng.uniform(0.235, 0.255) if male else rng.uniform(0.22, 0.24)),
        depth=float(rng.uniform(0.95, 1.1)),
        jaw_taper=float(rng.uniform(0.08, 0.25) if male else rng.uniform(0.22, 0.38)),
        proportions=proportions,
        asymmetries=asymmetries,
        eye_open=float(rng.uniform(0.5, 0.62) if male else rng.uniform(0.56, 0.7)),
        brow_thickness=float(rng.uniform(0.04, 0.06) if male else rng.uniform(0.022, 0.035)),
        lip_thickness=float(rng.uniform(0.035, 0.05) if male else rng.uniform(0.05, 0.07)),
        nose_width=float(rng.uniform(0.14, 0.19) if male else rng.uniform(0.12, 0.16)),
        ear_size=float(rng.uniform(0.2, 0.26)),
        hair_style=hair_style,
        hairline=float(rng.uniform(-0.62, -0.5)),
        fringe=fringe,
        part_tilt=float(rng.uniform(-0.12, 0.12)),
        balding=float(rng.uniform(0.0, 0.012) if male and rng.random() < 0.5 else 0.0),
        greying_onset=float(rng.uniform(35, 70)),
        stubble=bool(male and rng.random() < 0.4),
        face_value=face_value_score(proportions, asymmetries),
    )


@dataclasses.dataclass(frozen=True)
class ExampleParams:
    """Everything that varies between images of one identity."""

    subset: int
    age: float
    smile: int
    smile_amount: float   # 0.55-1 when smiling, 0-0.15 otherwise
    glasses: int
    glasses_round: bool
    lens_alpha: float
    frame_colour: tuple
    mask: int
    mask_colour: tuple
    lipstick: bool
    quality: int
    blur_sigma: float
    low_res_side: int
    noise_sigma: float
    pose: tuple           # (yaw, pitch, roll) degrees
    light: tuple          # direction (x, y, z) towards the light, unit length
    background: tuple     # two RGB colours, top and bottom
    shirt: tuple
    head_offset: tuple    # (dx, dy) fraction of the canvas
    head_scale: float
    noise_seed: int
    smile_scale: float = 1.0  # strength of every smile cue per unit of smile_amount (a builder config's, not drawn)


def _random_muted_colour(rng: np.random.Generator, low: int = 40, high: int = 220) -> tuple:
    return tuple(float(v) for v in rng.uniform(low, high, 3))


def sample_example(rng: np.random.Generator, person: IdentityParams, subset: int) -> ExampleParams:
    """Per-image parameters of one image of `person` in `subset` (1, 2 or 3)."""
    if subset not in SUBSETS:
        raise ValueError(f'subset must be one of {SUBSETS}; got {subset!r}')
    smile = int(rng.random() < 0.5)
    glasses = int(rng.random() < 0.3)
    mask = int(rng.random() < 0.3)
    quality = int(rng.choice(3, p=[0.5, 0.25, 0.25]))
    if subset == 3:
        pose = rng.uniform(-1, 1, 3) * np.array(LARGE_POSE_LIMIT)
    else:
        pose = np.clip(rng.normal(0, FRONTAL_POSE_SD), -np.array(FRONTAL_POSE_LIMIT), FRONTAL_POSE_LIMIT)
    light = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.1), 1.0])
    mask_colours = ([170, 205, 230], [235, 235, 235], [40, 40, 45], [120, 160, 200])
    return ExampleParams(
        subset=subset,
        age=float(np.clip(person.base_age + rng.uniform(-2, 2), *AGE_RANGE)),
        smile=smile,
        smile_amount=float(rng.uniform(0.55, 1.0) if smile else rng.uniform(0.0, 0.15)),
        glasses=glasses,
        glasses_round=bool(rng.random() < 0.5),
        lens_alpha=float(rng.uniform(0.65, 0.95)),
        frame_colour=_random_muted_colour(rng, 10, 90),
        mask=mask,
        mask_colour=tuple(float(v) for v in mask_colours[rng.integers(len(mask_colours))]),
        lipstick=bool(person.gender == 0 and rng.random() < 0.7),
        quality=quality,
        blur_sigma=float(rng.uniform(1.4, 2.6)),
        low_res_side=int(rng.integers(18, 31)),
        noise_sigma=float(rng.uniform(5, 12)),
        pose=tuple(float(v) for v in pose),
        light=tuple(float(v) for v in light / np.linalg.norm(light)),
        background=(_random_muted_colour(rng), _random_muted_colour(rng)),
        shirt=_random_muted_colour(rng, 20, 200),
        head_offset=(float(rng.uniform(-0.02, 0.02)), float(rng.uniform(-0.02, 0.02))),
        head_scale=float(rng.uniform(0.96, 1.04)),
        noise_seed=int(rng.integers(2**31)),
    )

