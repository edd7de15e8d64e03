"""The frontal face texture of `synthetic_faces`: skin, blush, stubble, wrinkles, eyes, brows, nostrils,
mouth, glasses and mask painted with Pillow onto the plane over the head's x-y extent; `render_face`
wraps it onto the head and nose ellipsoids by orthographic projection along head z."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from jaxface.data.faces.layout import FaceLayout, hair_colour, skin_colour
from jaxface.data.faces.sampling import ExampleParams, IdentityParams

_TEXTURE_SCALE = 1.0  # face texture pixels per work-canvas pixel


def _curve(x_from: float, x_to: float, fn, num: int = 14) -> list:
    """`num` points (x, fn(x)) with x evenly spaced from `x_from` to `x_to`."""
    step = (x_to - x_from) / (num - 1)
    return [(x_from + i * step, fn(x_from + i * step)) for i in range(num)]


def face_texture(person: IdentityParams, ex: ExampleParams, layout: FaceLayout, rng: np.random.Generator):
    """Frontal face texture over x in [-a, a], y in [-b, b] (head frame, canvas px), `_TEXTURE_SCALE`
    texture px per canvas px. Returns (rgb float32 [H, W, 3], alpha bool [H, W], scale)."""
    k = _TEXTURE_SCALE
    a, b = layout.a, layout.b
    width, height = int(2 * a * k) + 1, int(2 * b * k) + 1
    wrinkle = float(np.clip((ex.age - 25.0) / 40.0, 0.0, 1.0))
    skin = skin_colour(person, ex.age)
    image = Image.new('RGB', (width, height), tuple(int(v) for v in skin))
    draw = ImageDraw.Draw(image, 'RGBA')

    def px(x, y):  # head-frame canvas px -> texture px
        return ((x + a) * k, (y + b) * k)

    def poly(points):
        return [px(x, y) for x, y in points]

    def rgba(colour, alpha=255):
        return tuple(min(max(int(v), 0), 255) for v in colour) + (min(max(int(alpha), 0), 255),)

    prop, asym = person.proportions, person.asymmetries
    dark = skin * 0.55
    line_w = max(1, int(round(1.6 * k)))
    smile = ex.smile_amount * ex.smile_scale

    # Cheek blush (smiles raise and redden the cheeks; some women wear blush).
    blush = 0.6 * smile + (0.3 if person.gender == 0 else 0.0)
    for side in (-1, 1):
        cx, cy = side * 0.55 * a, 0.3 * b - 0.05 * b * smile
        r = 0.2 * a
        draw.ellipse([px(cx - r, cy - 0.7 * r), px(cx + r, cy + 0.7 * r)], fill=rgba((220, 90, 90), 45 * blush))

    # Stubble: darkened speckle over the beard area.
    if person.stubble:
        tex = np.array(image)
        top = int(1.25 * b * k)
        yh = (np.arange(top, height, dtype=np.float32)[:, None] / k - b)
        xh = np.arange(width, dtype=np.float32)[None, :] / k - a
        beard = np.abs(xh) < a * (1.0 - 0.9 * np.clip((yh - 0.25 * b) / b, 0, 1))
        beard &= ~((np.abs(xh - layout.mouth[0]) < layout.mouth[2] * 1.1)
                   & (np.abs(yh - layout.mouth[1]) < 0.08 * b))
        beard &= rng.random(beard.shape, dtype=np.float32) < 0.22
        region = tex[top:]
        region[beard] = (region[beard] * 0.68).astype(np.uint8)
        image = Image.fromarray(tex)
        draw = ImageDraw.Draw(image, 'RGBA')

    # Wrinkles: thin dark lines whose opacity grows with age.
    if wrinkle > 0:
        colour = rgba(dark, 200 * wrinkle)
        for j, level in enumerate((-0.27, -0.35, -0.43)):
            span = 0.42 - 0.05 * j
            pts = _curve(-span * a, span * a, lambda x, level=level: level * b + 0.02 * b * math.cos(7 * x / a))
            draw.line(poly(pts), fill=colour, width=line_w)
        mouth_x, mouth_y, mouth_half_w = layout.mouth[:3]
        for side, (cx, cy, hw, _) in zip((-1, 1), layout.eyes):
            # Crow's feet.
            ex0 = cx + side * hw * 1.1
            for angle in (-25, 0, 25):
                dx, dy = 0.12 * a * math.cos(math.radians(angle)), 0.12 * a * math.sin(math.radians(angle))
                draw.line(poly([(ex0, cy), (ex0 + side * dx, cy + dy)]), fill=colour, width=line_w)
            # Nasolabial fold: from the nose wing to beyond the mouth corner.
            nx = layout.nose.centre[0] + side * (person.nose_width * a + 0.03 * a)
            mx = mouth_x + side * (mouth_half_w + 0.05 * a)
            pts = [(nx, layout.nostril_y - 0.03 * b), (0.5 * (nx + mx) + side * 0.06 * a, 0.5 * (layout.nostril_y + mouth_y)),
                   (mx, mouth_y + 0.06 * b)]
            draw.line(poly(pts), fill=colour, width=line_w)
            # Under-eye line.
            pts = _curve(cx - hw * 0.8, cx + hw * 0.8,
                         lambda x, cx=cx, cy=cy, hw=hw: cy + 0.11 * b - 0.03 * b * (1 - ((x - cx) / hw) ** 2))
            draw.line(poly(pts), fill=colour, width=line_w)

    # Eyes: sclera almond, iris, pupil, then skin lids trimmed back over the iris, lid line, brow.
    hair_now = hair_colour(person, ex.age)
    for side, (cx, cy, hw, hh) in zip((-1, 1), layout.eyes):
        def top(x, cx=cx, cy=cy, hw=hw, hh=hh):
            return cy - hh * (1 - ((x - cx) / hw) ** 2)

        def bottom(x, cx=cx, cy=cy, hw=hw, hh=hh):
            return cy + 0.7 * hh * (1 - ((x - cx) / hw) ** 2)

        draw.polygon(poly(_curve(cx - hw, cx + hw, top) + _curve(cx + hw, cx - hw, bottom)), fill=rgba((240, 238, 232)))
        r_iris = 0.55 * hw
        draw.ellipse([px(cx - r_iris, cy - r_iris), px(cx + r_iris, cy + r_iris)], fill=rgba(person.eye_colour))
        r_pupil = 0.45 * r_iris
        draw.ellipse([px(cx - r_pupil, cy - r_pupil), px(cx + r_pupil, cy + r_pupil)], fill=rgba((15, 12, 12)))
        lid = rgba(skin * 0.93)
        draw.polygon(poly(_curve(cx - hw * 1.05, cx + hw * 1.05, top) + [(cx + hw * 1.05, cy - 1.2 * hw),
                                                                         (cx - hw * 1.05, cy - 1.2 * hw)]), fill=lid)
        draw.polygon(poly(_curve(cx - hw * 1.05, cx + hw * 1.05, bottom) + [(cx + hw * 1.05, cy + 1.2 * hw),
                                                                            (cx - hw * 1.05, cy + 1.2 * hw)]),
                     fill=rgba(skin))
        lash_w = max(1, int(round((2.6 if person.gender == 0 else 1.6) * k)))
        draw.line(poly(_curve(cx - hw * 1.05, cx + hw * 1.05, top)), fill=rgba((25, 18, 15)), width=lash_w)
        # Brow.
        brow_y = cy - 0.17 * b + side * asym['brow_dy'] * b / 2
        bw = hw * 1.25
        pts = _curve(cx - bw, cx + bw, lambda x, cx=cx, brow_y=brow_y, bw=bw:
                     brow_y - 0.04 * b * (1 - ((x - cx) / bw) ** 2) + side * 0.02 * b * (x - cx) / bw)
        draw.line(poly(pts), fill=rgba(hair_now * 0.8), width=max(1, int(round(person.brow_thickness * b * k))))

    # Nostrils (the nose itself is an ellipsoid; its lower edge carries these from the texture).
    nose_x, nose_y = layout.nose.centre[0], layout.nostril_y
    for side in (-1, 1):
        cx = nose_x + side * person.nose_width * a * 0.45
        draw.ellipse([px(cx - 0.07 * a, nose_y - 0.035 * b), px(cx + 0.07 * a, nose_y + 0.02 * b)],
                     fill=rgba(skin * 0.4))

    # Mouth: lips along a centre line whose corners rise with the smile; a smile opens onto teeth.
    mouth_x, mouth_y, half_w, raise_corners, opening, lip_t = layout.mouth
    lips = np.array((190, 40, 60)) if ex.lipstick else np.array(person.lips)

    def centre(x):
        s = (x - mouth_x) / half_w
        return mouth_y - raise_corners * (s * s) + asym['mouth_tilt'] * b * s / 2

    def bump(x):
        s = (x - mouth_x) / half_w
        return max(1.0 - s * s, 0.0) ** 0.6

    x_l, x_r = mouth_x - half_w, mouth_x + half_w
    upper_in = lambda x: centre(x) - 0.3 * opening * bump(x)  # noqa: E731
    lower_in = lambda x: centre(x) + 0.7 * opening * bump(x)  # noqa: E731
    if opening > 0:
        draw.polygon(poly(_curve(x_l, x_r, upper_in) + _curve(x_r, x_l, lower_in)), fill=rgba((70, 20, 25)))
        teeth = lambda x: upper_in(x) + 0.5 * opening * bump(x)  # noqa: E731
        draw.polygon(poly(_curve(x_l * 0.8 + 0.2 * mouth_x, x_r * 0.8 + 0.2 * mouth_x, upper_in)
                          + _curve(x_r * 0.8 + 0.2 * mouth_x, x_l * 0.8 + 0.2 * mouth_x, teeth)),
                     fill=rgba((245, 243, 235)))
    draw.polygon(poly(_curve(x_l, x_r, lambda x: upper_in(x) - lip_t * bump(x)) + _curve(x_r, x_l, upper_in)),
                 fill=rgba(lips * 0.92))
    draw.polygon(poly(_curve(x_l, x_r, lower_in) + _curve(x_r, x_l, lambda x: lower_in(x) + 1.2 * lip_t * bump(x))),
                 fill=rgba(lips))
    draw.line(poly(_curve(x_l, x_r, upper_in)), fill=rgba(lips * 0.5), width=max(1, int(round(1.2 * k))))

    # Glasses: tinted lenses hide the eyes (and crow's feet); frame, bridge and temple arms.
    if ex.glasses:
        frame = rgba(ex.frame_colour)
        frame_w = max(1, int(round(3.0 * k)))
        lens_boxes = []
        for side, (cx, cy, hw, _) in zip((-1, 1), layout.eyes):
            rx, ry = max(hw * 1.5, 0.28 * a), 0.15 * b
            box = [px(cx - rx, -ry), px(cx + rx, ry * 0.95)]
            lens_boxes.append(box)
            if ex.glasses_round:
                draw.ellipse(box, fill=rgba((25, 25, 35), 255 * ex.lens_alpha), outline=frame, width=frame_w)
            else:
                draw.rounded_rectangle(box, radius=0.3 * ry * k, fill=rgba((25, 25, 35), 255 * ex.lens_alpha),
                                       outline=frame, width=frame_w)
            draw.line([(box[1][0] if side == 1 else box[0][0], box[0][1] + 0.25 * ry * k), px(side * a, -0.02 * b)],
                      fill=frame, width=frame_w)
        draw.line([(lens_boxes[0][1][0], lens_boxes[0][0][1] + 0.3 * (lens_boxes[0][1][1] - lens_boxes[0][0][1])),
                   (lens_boxes[1][0][0], lens_boxes[1][0][1] + 0.3 * (lens_boxes[1][1][1] - lens_boxes[1][0][1]))],
                  fill=frame, width=frame_w)

    rgb = np.asarray(image, np.float32)
    # Face outline: the head ellipse, narrowed by the jaw taper below the cheekbones, cut at the chin.
    u = (np.arange(width, dtype=np.float32)[None, :] / k - a) / a
    v = (np.arange(height, dtype=np.float32)[:, None] / k - b) / b
    jaw = np.clip((v - 0.15) / 0.8, 0.0, 1.0) ** 1.4
    alpha = (u / (1.0 - person.jaw_taper * jaw)) ** 2 + v**2 <= 1.0
    alpha &= v <= 0.93

    # Mask: opaque over the nose tip, mouth and chin; straps to the ears. Drawn last so nothing the
    # smile changes shows through.
    if ex.mask:
        mask_image = Image.new('L', (width, height), 0)
        mdraw = ImageDraw.Draw(mask_image)
        top_y = 0.5 * prop['nose_len'] * b
        outline = [(-0.88 * a, top_y + 0.12 * b), (-0.3 * a, top_y), (0.3 * a, top_y), (0.88 * a, top_y + 0.12 * b),
                   (0.8 * a, 0.72 * b), (0.3 * a, 1.0 * b), (-0.3 * a, 1.0 * b), (-0.8 * a, 0.72 * b)]
        mdraw.polygon(poly(outline), fill=255)
        covered = np.asarray(mask_image) > 0
        rgb[covered] = np.array(ex.mask_colour, np.float32)
        alpha |= covered & (v <= 0.99)
        pleat = Image.fromarray(rgb.astype(np.uint8))
        pdraw = ImageDraw.Draw(pleat, 'RGBA')
        for j in range(3):
            y = top_y + (0.22 + 0.2 * j) * b
            pdraw.line(poly([(-0.7 * a, y), (0.7 * a, y)]), fill=rgba(np.array(ex.mask_colour) * 0.75),
                       width=line_w)
        for side in (-1, 1):
            pdraw.line(poly([(side * 0.86 * a, top_y + 0.14 * b), (side * a, 0.0)]), fill=rgba((235, 235, 235)),
                       width=line_w)
            pdraw.line(poly([(side * 0.8 * a, 0.7 * b), (side * a, 0.2 * b)]), fill=rgba((235, 235, 235)),
                       width=line_w)
        rgb = np.asarray(pleat, np.float32)
    return rgb, alpha, k
