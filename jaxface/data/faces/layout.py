"""Where the parts of one face sit in one image (`face_layout`) and the identity's colours at a given
age; shared by the face texture, the 3-D parts of `render_face` and `landmarks`."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from jaxface.data.faces.labels import AGE_RANGE
from jaxface.data.faces.raycast import Ellipsoid
from jaxface.data.faces.sampling import ExampleParams, IdentityParams

_GREY_HAIR = np.array([200, 200, 205], np.float32)


@dataclasses.dataclass(frozen=True)
class FaceLayout:
    """Geometry of one image in head-frame canvas px (x right, y down, z towards the viewer, origin the
    head centre), shared by the texture, the 3-D parts and `landmarks`."""

    a: float              # head half-width
    b: float              # head half-height
    c: float              # head half-depth
    head_xy: tuple        # canvas px of the head centre
    eyes: tuple           # for side -1 then +1: (centre x, centre y, half width, half height)
    nose: Ellipsoid
    nostril_y: float
    mouth: tuple          # (centre x, centre y, half width, corner raise, opening, lip thickness)


def age_fraction(age: float) -> float:
    """Age as a fraction of `AGE_RANGE`: 0 at 18 years, 1 at 78."""
    return (age - AGE_RANGE[0]) / (AGE_RANGE[1] - AGE_RANGE[0])


def face_layout(person: IdentityParams, ex: ExampleParams, side: int) -> FaceLayout:
    """Layout of `person` in image `ex` on a `side` x `side` canvas: the identity's proportions and
    asymmetries scaled to canvas px, changed by this image's age (eyes narrow, nose lengthens, lips thin)
    and smile (eyes narrow, mouth widens, corners rise, mouth opens)."""
    prop, asym = person.proportions, person.asymmetries
    a = person.half_width * side * ex.head_scale
    b = a * prop['aspect']
    c = a * person.depth
    age_t = age_fraction(ex.age)
    smile = ex.smile_amount * ex.smile_scale
    eyes = []
    for sign in (-1, 1):
        half_w = prop['eye_width'] * a / 2 * (1.0 + sign * asym['eye_size_diff'] / 2)
        # Eyes narrow with age and when smiling (the cheeks push the lower lids up).
        half_h = half_w * person.eye_open * (1.0 - 0.3 * age_t) * (1.0 - 0.22 * smile)
        eyes.append((sign * prop['eye_sep'] * a, sign * asym['eye_dy'] * b / 2, half_w, half_h))
    nose_len = (prop['nose_len'] + 0.04 * age_t) * b  # noses lengthen with age
    nose_x = asym['nose_dx'] * a
    face_z = c * math.sqrt(max(1.0 - (nose_x / a) ** 2 - (0.5 * nose_len / b) ** 2, 0.0))
    nose = Ellipsoid(np.array([nose_x, 0.5 * nose_len, face_z - 0.05 * a]),
                     np.array([person.nose_width * a, 0.55 * nose_len, 0.22 * a]))
    mouth_y = prop['nose_len'] * b + 0.24 * b
    mouth_half_w = prop['mouth_width'] * a * (1.0 + 0.2 * smile)
    lip_t = person.lip_thickness * b * (1.0 - 0.35 * age_t) * (1.15 if person.gender == 0 else 1.0)
    mouth = (asym['mouth_dx'] * a, mouth_y, mouth_half_w, 0.11 * b * smile,
             0.12 * b * max(smile - 0.3, 0.0) / 0.7, lip_t)
    head_xy = (side * (0.5 + ex.head_offset[0]), side * (0.45 + ex.head_offset[1]))
    return FaceLayout(a=a, b=b, c=c, head_xy=head_xy, eyes=tuple(eyes), nose=nose, nostril_y=nose_len, mouth=mouth)


def skin_colour(person: IdentityParams, age: float) -> np.ndarray:
    """Skin darkens slightly with age."""
    return (np.array(person.skin) * (1.0 - 0.08 * age_fraction(age))).astype(np.float32)


def hair_colour(person: IdentityParams, age: float) -> np.ndarray:
    """RGB float [3]: the identity's hair colour mixed with grey by up to 80% as it ages."""
    # Greying starts at an identity-specific age and never completes: a coarse, unreliable age cue.
    grey = 0.8 * float(np.clip((age - person.greying_onset) / 25.0, 0.0, 1.0))
    return (1 - grey) * np.array(person.hair) + grey * _GREY_HAIR
