"""Orthographic ray casting of ellipsoids and Lambert shading: the 3-D core of the face renderer.

The head frame has x right, y down and z towards the viewer at zero pose; `rotation_matrix(yaw, pitch,
roll)` maps it to the view frame. Rays run along view z through canvas pixel centres; on an ellipsoid
with centre m and semi-axes s the visible hit is the larger root t of |(o + t d - m) / s|^2 = 1, with
o the ray's head-frame origin and d = R[2] its head-frame direction.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

_AMBIENT, _DIFFUSE = 0.5, 0.6


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """[3, 3] head frame -> view frame (x right, y down, z towards the viewer), R = Rz(roll) Ry(yaw) Rx(pitch).
    The face normal (0, 0, 1) goes to (sin yaw cos pitch, -sin pitch, ...) before roll."""
    y, p, r = np.deg2rad([yaw, pitch, roll])
    rot_yaw = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rot_pitch = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    rot_roll = np.array([[math.cos(r), math.sin(r), 0], [-math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rot_roll @ rot_yaw @ rot_pitch


@dataclasses.dataclass
class Ellipsoid:
    """Axis-aligned (in the head frame) ellipsoid: points p with sum_k ((p_k - centre_k) / axes_k)^2 <= 1."""

    centre: np.ndarray  # head frame, canvas pixels
    axes: np.ndarray


def cast_rays(ellipsoid: Ellipsoid, rotation: np.ndarray, head_xy, shape):
    """Ray-casts `ellipsoid` (head frame) through the canvas pixels inside its projected bounding box.

    Returns None when the box is off the canvas, else (window, t, hit, point): `window` the (row, column)
    slices of the box, `t` [h, w] view-z of the front hit (larger is nearer), `hit` [h, w] bool and
    `point` a tuple of three [h, w] head-frame coordinates of the hit. Works on 2-D component arrays
    (not [h, w, 3]) because this is the renderer's inner loop.
    """
    centre_view = rotation @ ellipsoid.centre
    extent = np.sqrt(((rotation * ellipsoid.axes) ** 2).sum(axis=1))
    x0 = max(int(head_xy[0] + centre_view[0] - extent[0]) - 1, 0)
    x1 = min(int(head_xy[0] + centre_view[0] + extent[0]) + 2, shape[1])
    y0 = max(int(head_xy[1] + centre_view[1] - extent[1]) - 1, 0)
    y1 = min(int(head_xy[1] + centre_view[1] + extent[1]) + 2, shape[0])
    if x1 <= x0 or y1 <= y0:
        return None
    xs = (np.arange(x0, x1, dtype=np.float32) + np.float32(0.5 - head_xy[0]))[None, :]
    ys = (np.arange(y0, y1, dtype=np.float32) + np.float32(0.5 - head_xy[1]))[:, None]
    # Ray through view pixel (X, Y): head-frame origin X R[0] + Y R[1], direction R[2].
    direction = rotation[2] / ellipsoid.axes
    a_coef = float(direction @ direction)
    b_coef = np.zeros((y1 - y0, x1 - x0), np.float32)
    c_coef = np.full((y1 - y0, x1 - x0), -1.0, np.float32)
    for k in range(3):
        base = (xs * np.float32(rotation[0, k] / ellipsoid.axes[k])
                + (ys * np.float32(rotation[1, k] / ellipsoid.axes[k])
                   - np.float32(ellipsoid.centre[k] / ellipsoid.axes[k])))
        b_coef += np.float32(2.0 * direction[k]) * base
        c_coef += base * base
    disc = b_coef * b_coef - np.float32(4.0 * a_coef) * c_coef
    hit = disc >= 0
    t = (np.sqrt(np.maximum(disc, 0.0)) - b_coef) * np.float32(0.5 / a_coef)
    point = tuple(xs * np.float32(rotation[0, k]) + ys * np.float32(rotation[1, k]) + t * np.float32(rotation[2, k])
                  for k in range(3))
    return (slice(y0, y1), slice(x0, x1)), t, hit, point


def lambert_shading(ellipsoid: Ellipsoid, point: tuple, rotation: np.ndarray,
                    light: np.ndarray) -> np.ndarray:
    """Ambient + diffuse shading [h, w] at head-frame `point` (three [h, w] arrays) on `ellipsoid`."""
    light_head = rotation.T @ light
    normal = [(point[k] - np.float32(ellipsoid.centre[k])) * np.float32(1.0 / ellipsoid.axes[k] ** 2) for k in range(3)]
    norm = np.sqrt(normal[0] ** 2 + normal[1] ** 2 + normal[2] ** 2) + np.float32(1e-9)
    cosine = (normal[0] * np.float32(light_head[0]) + normal[1] * np.float32(light_head[1])
              + normal[2] * np.float32(light_head[2])) / norm
    return np.float32(_AMBIENT) + np.float32(_DIFFUSE) * np.clip(cosine, 0.0, 1.0)

