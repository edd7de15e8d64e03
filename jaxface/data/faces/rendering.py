"""`render_face`: one whole image of `synthetic_faces` (background, shoulders, neck, textured head,
nose, ears and hair, ray-cast and shaded, then degraded by `quality`), and the `landmarks` of that image."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from jaxface.data.faces.layout import face_layout, hair_colour, skin_colour
from jaxface.data.faces.raycast import Ellipsoid, cast_rays, lambert_shading, rotation_matrix
from jaxface.data.faces.sampling import ExampleParams, IdentityParams
from jaxface.data.faces.texture import face_texture

_SUPERSAMPLE = 1.5  # ray-cast at 1.5x the output side, then box-downsample (anti-aliasing)


def _background(ex: ExampleParams, side: int) -> np.ndarray:
    """Vertical gradient from `ex.background[0]` (top) to `[1]` (bottom); float32 [side, side, 3]."""
    top, bottom = np.array(ex.background[0], np.float32), np.array(ex.background[1], np.float32)
    ramp = np.linspace(0.0, 1.0, side, dtype=np.float32)[:, None, None]
    return np.broadcast_to(top + ramp * (bottom - top), (side, side, 3)).copy()


def render_face(person: IdentityParams, ex: ExampleParams, image_size: int = 112) -> np.ndarray:
    """Renders one face. Returns uint8 [image_size, image_size, 3]; a pure function of its arguments."""
    side = int(round(_SUPERSAMPLE * image_size))
    rng = np.random.default_rng(ex.noise_seed)
    rotation = rotation_matrix(*ex.pose)
    light = np.array(ex.light)
    layout = face_layout(person, ex, side)
    a, b, c, head_xy = layout.a, layout.b, layout.c, layout.head_xy
    skin = skin_colour(person, ex.age)
    hair = hair_colour(person, ex.age).astype(np.float32)

    layer = Image.fromarray(_background(ex, side).astype(np.uint8))
    draw = ImageDraw.Draw(layer)
    # Shoulders: not rotated with the head, only shifted a little by yaw.
    shift = 0.2 * a * math.sin(math.radians(ex.pose[0]))
    draw.ellipse([head_xy[0] - 2.6 * a + shift, head_xy[1] + 1.32 * b,
                  head_xy[0] + 2.6 * a + shift, head_xy[1] + 1.32 * b + 3.0 * a],
                 fill=tuple(int(v) for v in ex.shirt))
    if person.hair_style == 'long':
        # Hair falling behind the head down to the shoulders: attached to the head at the top, hanging
        # straight down (not rotated) below.
        top = np.array([[-1.0 * a, -0.3 * b, -0.6 * c], [1.0 * a, -0.3 * b, -0.6 * c]]) @ rotation.T
        hang = np.array([[1.25 * a, 1.75 * b], [0.6 * a, 1.85 * b], [-0.6 * a, 1.85 * b], [-1.25 * a, 1.75 * b]])
        hang[:, 0] += 0.5 * (top[0, 0] + top[1, 0])
        outline = list(top[:, :2]) + list(hang)
        draw.polygon([(head_xy[0] + p[0], head_xy[1] + p[1]) for p in outline],
                     fill=tuple(int(v) for v in hair * 0.75))
    canvas = np.asarray(layer, np.float32).copy()
    depth = np.full((side, side), -np.inf, np.float32)

    def composite(window, t, valid, colour):
        nearer = valid & (t > depth[window])
        np.copyto(depth[window], t, where=nearer)
        np.copyto(canvas[window], colour, where=nearer[..., None])

    def shaded(colour, shade):  # colour [3] or [h, w, 3], shade [h, w] -> [h, w, 3]
        return colour * shade[..., None]

    # Neck: upright in the view frame (the head turns on it), hidden behind the jaw at the top.
    neck = Ellipsoid(np.array([0.0, 1.1 * b, -0.35 * c]), np.array([0.5 * a, 0.75 * b, 0.5 * c]))
    upright = np.eye(3)
    cast = cast_rays(neck, upright, head_xy, canvas.shape)
    if cast is not None:
        window, t, hit, point = cast
        composite(window, t, hit, shaded(skin * 0.62, lambert_shading(neck, point, upright, light)))

    # Head: face texture on the front hemisphere, plain skin behind, cut away below the jaw line.
    texture, tex_alpha, k = face_texture(person, ex, layout, rng)
    head = Ellipsoid(np.zeros(3), np.array([a, b, c]))

    def textured(point, front_only):
        col = np.clip(((point[0] + a) * k).astype(np.int32), 0, texture.shape[1] - 1)
        row = np.clip(((point[1] + b) * k).astype(np.int32), 0, texture.shape[0] - 1)
        colour = texture[row, col]
        valid = tex_alpha[row, col]
        if front_only:
            return colour, valid
        front = point[2] >= 0
        behind = ~front & (point[1] < 0.55 * b)
        colour = np.where(behind[..., None], skin, colour)
        return colour, np.where(front, valid, behind)

    window, t, hit, point = cast_rays(head, rotation, head_xy, canvas.shape)
    colour, valid = textured(point, front_only=False)
    composite(window, t, hit & valid, shaded(colour, lambert_shading(head, point, rotation, light)))

    # Nose: an ellipsoid from the brow line to the nostrils, textured with the face (mask included).
    nose = layout.nose
    cast = cast_rays(nose, rotation, head_xy, canvas.shape)
    if cast is not None:
        window, t, hit, point = cast
        colour, valid = textured(point, front_only=True)
        composite(window, t, hit & valid, shaded(colour, lambert_shading(nose, point, rotation, light)))

    # Ears, slightly darker than the face, with a darker inner bowl.
    for sign in (-1, 1):
        ear = Ellipsoid(np.array([sign * 0.97 * a, 0.08 * b, -0.1 * c]),
                        np.array([0.1 * a, person.ear_size * b, 0.2 * a]))
        cast = cast_rays(ear, rotation, head_xy, canvas.shape)
        if cast is None:
            continue
        window, t, hit, point = cast
        inner = ((point[1] - ear.centre[1]) / ear.axes[1]) ** 2 + ((point[2] - ear.centre[2]) / ear.axes[2]) ** 2
        colour = np.where((inner < 0.35)[..., None], skin * 0.7, skin * 0.9)
        composite(window, t, hit, shaded(colour, lambert_shading(ear, point, rotation, light)))

    # Hair shell: hair above the hairline at the front, above the nape at the back.
    volume = {'short': (1.06, 1.05, 1.08), 'bob': (1.14, 1.08, 1.15), 'long': (1.12, 1.07, 1.15)}[person.hair_style]
    shell = Ellipsoid(np.array([0.0, -0.05 * b, -0.04 * c]), np.array([a, b, c]) * np.array(volume))
    hairline = person.hairline - person.balding * max(ex.age - 30.0, 0.0)
    if person.fringe:
        hairline = -0.32
    side_level = {'short': -0.05, 'bob': 0.3, 'long': 0.5}[person.hair_style]
    nape_level = {'short': 0.5, 'bob': 0.7, 'long': 1.0}[person.hair_style]
    window, t, hit, point = cast_rays(shell, rotation, head_xy, canvas.shape)
    u, v, w = ((point[j] - np.float32(shell.centre[j])) * np.float32(1.0 / shell.axes[j]) for j in range(3))
    front_line = hairline + person.part_tilt * u + (side_level - hairline) * u * u
    is_hair = np.where(w >= 0, v < front_line, v < nape_level)
    # Strands: fine stripes running from the crown, in the shell's frontal (u, v) coordinates.
    strands = 0.9 + 0.1 * np.sin(np.float32(70.0) * np.arctan2(u, v + 1.2))
    composite(window, t, hit & is_hair, shaded(hair, strands * lambert_shading(shell, point, rotation, light)))

    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    image = image.resize((image_size, image_size), Image.Resampling.BOX)
    return _degrade(image, ex, rng)


LANDMARK_NAMES = ('eye_image_left', 'eye_image_right', 'nose_tip', 'mouth_image_left', 'mouth_image_right')


def landmarks(person: IdentityParams, ex: ExampleParams, image_size: int = 112) -> np.ndarray:
    """Five landmarks of the rendered face, float32 [5, 2] of (x, y) output pixels, in the order
    `LANDMARK_NAMES` ('image_left' = the side at smaller x in a frontal view): the pupils, the nose
    tip and the mouth corners, projected through the same head pose as `render_face`. Points can be
    hidden by pose or accessories; they are positions, not visibilities."""
    side = int(round(_SUPERSAMPLE * image_size))
    layout = face_layout(person, ex, side)
    a, b, c = layout.a, layout.b, layout.c

    def on_face(x, y):
        return (x, y, c * math.sqrt(max(1.0 - (x / a) ** 2 - (y / b) ** 2, 0.0)))

    mouth_x, mouth_y, half_w, raise_corners, _, _ = layout.mouth
    tilt = person.asymmetries['mouth_tilt'] * b / 2
    nose = layout.nose
    points = np.array([
        on_face(*layout.eyes[0][:2]),
        on_face(*layout.eyes[1][:2]),
        (nose.centre[0], nose.centre[1], nose.centre[2] + nose.axes[2]),
        on_face(mouth_x - half_w, mouth_y - raise_corners - tilt),
        on_face(mouth_x + half_w, mouth_y - raise_corners + tilt),
    ])
    view = points @ rotation_matrix(*ex.pose).T
    return ((view[:, :2] + np.array(layout.head_xy)) * (image_size / side)).astype(np.float32)


def _degrade(image: Image.Image, ex: ExampleParams, rng: np.random.Generator) -> np.ndarray:
    """quality 0: unchanged; 1: Gaussian blur; 2: down to `low_res_side` px and back, plus noise."""
    if ex.quality == 1:
        image = image.filter(ImageFilter.GaussianBlur(ex.blur_sigma))
    elif ex.quality == 2:
        size = image.size[0]
        image = image.resize((ex.low_res_side, ex.low_res_side), Image.Resampling.BOX)
        image = image.resize((size, size), Image.Resampling.BILINEAR)
        noisy = np.asarray(image, np.float32) + rng.normal(0.0, ex.noise_sigma, (size, size, 3))
        return np.clip(np.round(noisy), 0, 255).astype(np.uint8)
    return np.asarray(image, np.uint8).copy()
