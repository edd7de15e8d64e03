"""PNG figures for evaluation reports: detection grids, training curves and grouped bar charts, and
one image with its detections drawn at its own size (draw_detections, via PIL).

Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so importing this module never
changes the global backend nor needs a display, and figures are freed when they go out of scope.
Every save_* function creates the parent directory of `path` and returns `path`.
"""

from __future__ import annotations

import math
import os
import textwrap
import zlib
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

PANEL_INCHES = 2.6
DPI = 110
GT_COLOUR = "lime"
# tab10 without its green, so no predicted class is drawn in a colour close to the ground truth's.
PREDICTION_COLOURS = [colormaps["tab10"](i) for i in range(10) if i != 2]


def _new_figure(width_inches: float, height_inches: float) -> Figure:
    figure = Figure(figsize=(width_inches, height_inches), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: str | os.PathLike) -> str:
    path = os.fspath(path)
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    figure.savefig(path, format="png", bbox_inches="tight")
    return path


def _displayable(image: np.ndarray) -> np.ndarray:
    """[H, W], [H, W, 1] or [H, W, 3] -> an array imshow draws faithfully.

    uint8 is shown as is; floats already in [0, 1] too; other floats (e.g. mean/std normalised
    inputs) are min-max rescaled per image so the picture stays visible.
    """
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.dtype == np.uint8:
        return image
    image = image.astype(np.float32)
    low, high = float(np.nanmin(image)), float(np.nanmax(image))
    if low >= 0.0 and high <= 1.0:
        return image
    return (image - low) / (high - low) if high > low else np.zeros_like(image)


def _check_detections(name: str, boxes, scores, classes, num_images: int):
    boxes, classes = np.asarray(boxes), np.asarray(classes)
    scores = None if scores is None else np.asarray(scores)
    if boxes.ndim != 3 or boxes.shape[0] != num_images or boxes.shape[-1] != 4:
        raise ValueError(f"{name}boxes must have shape [N={num_images}, D, 4], got {boxes.shape}")
    if classes.shape != boxes.shape[:2] or (scores is not None and scores.shape != boxes.shape[:2]):
        raise ValueError(
            f"{name}scores/classes must have shape {boxes.shape[:2]} to match {name}boxes, got "
            f"{None if scores is None else scores.shape} and {classes.shape}"
        )
    return boxes, scores, classes


def _checked_images(images) -> np.ndarray:
    """Images as an array of shape [N, H, W], [N, H, W, 1] or [N, H, W, 3], or a one-line ValueError."""
    images = np.asarray(images)
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3)):
        raise ValueError(
            f"images must have shape [N, H, W], [N, H, W, 1] or [N, H, W, 3], got {images.shape}"
        )
    return images


def save_detection_grid(
    path: str | os.PathLike,
    images: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    *,
    class_names: Sequence[str],
    gt_boxes: np.ndarray | None = None,
    gt_labels: np.ndarray | None = None,
    score_threshold: float = 0.3,
    max_images: int = 16,
    title: str | None = None,
) -> str:
    """Draws predicted (and optionally ground-truth) boxes on a grid of images and saves a PNG.

    Args:
      path: output .png file.
      images: [N, H, W], [N, H, W, 1] or [N, H, W, 3]; uint8, floats in [0, 1], or other floats
        (min-max rescaled per image).
      boxes: [N, D, 4] predicted normalised [ymin, xmin, ymax, xmax].
      scores: [N, D]; only detections with score >= score_threshold are drawn.
      classes: [N, D] int in [0, len(class_names)); negative entries are padding.
      class_names: names used in the box labels.
      gt_boxes, gt_labels: optional [N, K, 4] / [N, K] ground truth (-1 = padding), drawn dashed
        in lime; give both or neither.
      score_threshold: minimum score drawn.
      max_images: the first min(N, max_images) images are drawn, in a near-square grid.
      title: optional figure title.

    Predictions are solid boxes coloured by class, labelled "<name> <score>".

    Returns:
      path as a str.
    """
    images = _checked_images(images)
    num_images = images.shape[0]
    if num_images == 0:
        raise ValueError("images must hold at least one image, got N = 0")
    if max_images < 1:
        raise ValueError(f"max_images must be >= 1, got {max_images}")
    boxes, scores, classes = _check_detections("", boxes, scores, classes, num_images)
    if (gt_boxes is None) != (gt_labels is None):
        raise ValueError("gt_boxes and gt_labels must be given together or not at all")
    if gt_boxes is not None:
        gt_boxes, _, gt_labels = _check_detections("gt_", gt_boxes, None, gt_labels, num_images)
    num_names = len(class_names)
    for name, labels in (("classes", classes), ("gt_labels", gt_labels)):
        if labels is not None and np.any(labels >= num_names):
            raise ValueError(
                f"{name} must be < len(class_names) = {num_names} (negative = padding), "
                f"got max {labels.max()}"
            )

    num_drawn = min(num_images, max_images)
    num_cols = math.ceil(math.sqrt(num_drawn))
    num_rows = math.ceil(num_drawn / num_cols)
    height, width = images.shape[1:3]
    figure = _new_figure(num_cols * PANEL_INCHES, num_rows * PANEL_INCHES * height / width + 0.6)
    axes = figure.subplots(num_rows, num_cols, squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.set_axis_off()
        if index >= num_drawn:
            continue
        image = _displayable(images[index])
        # extent maps the image onto [0, W] x [0, H], so a normalised box scales by W and H exactly.
        grey_range = {"cmap": "gray", "vmin": 0, "vmax": 255 if image.dtype == np.uint8 else 1}
        axis.imshow(
            image, extent=(0, width, height, 0), interpolation="nearest",
            **(grey_range if image.ndim == 2 else {}),
        )
        if gt_boxes is not None:
            for box, label in zip(gt_boxes[index], gt_labels[index]):
                if label < 0:
                    continue
                ymin, xmin, ymax, xmax = box * np.array([height, width, height, width])
                axis.add_patch(
                    Rectangle((xmin, ymin), xmax - xmin, ymax - ymin, fill=False,
                              edgecolor=GT_COLOUR, linewidth=1.6, linestyle="--")
                )
        num_shown = 0
        for box, score, label in zip(boxes[index], scores[index], classes[index]):
            if label < 0 or not score >= score_threshold:
                continue
            num_shown += 1
            colour = PREDICTION_COLOURS[int(label) % len(PREDICTION_COLOURS)]
            ymin, xmin, ymax, xmax = box * np.array([height, width, height, width])
            axis.add_patch(
                Rectangle((xmin, ymin), xmax - xmin, ymax - ymin, fill=False, edgecolor=colour,
                          linewidth=1.6)
            )
            # Inside the box's top-left corner, so boxes touching the image top keep their label.
            axis.text(
                xmin, ymin, f"{class_names[int(label)]} {score:.2f}", fontsize=6.5, color="white",
                verticalalignment="top", clip_on=True,
                bbox=dict(facecolor=colour, alpha=0.8, edgecolor="none", pad=1.0),
            )
        axis.set_title(f"#{index}: {num_shown} shown", fontsize=7)
    handles = [
        Line2D([], [], color=PREDICTION_COLOURS[0], linewidth=1.6,
               label=f"prediction, colour = class (score >= {score_threshold:g})")
    ]
    if gt_boxes is not None:
        handles.append(
            Line2D([], [], color=GT_COLOUR, linewidth=1.6, linestyle="--", label="ground truth")
        )
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7, frameon=False)
    if title:
        figure.suptitle(title, fontsize=9)
    return _save(figure, path)


def save_curves(
    path: str | os.PathLike,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str,
    ylabel: str,
    log_y: bool = False,
) -> str:
    """Line plot with one line per named series, e.g. training loss of several runs.

    Args:
      path: output .png file.
      series: {name: (steps, values)}, steps and values 1-D of equal length; NaN values leave gaps.
      title: figure title.
      ylabel: y-axis label (the x-axis is 'step').
      log_y: logarithmic y-axis; then every finite value must be > 0.

    Returns:
      path as a str.
    """
    if not series:
        raise ValueError("series must hold at least one {name: (steps, values)} entry, got none")
    checked = {}
    for name, pair in series.items():
        if len(pair) != 2:
            raise ValueError(f"series[{name!r}] must be a (steps, values) pair, got {len(pair)} items")
        steps, values = np.asarray(pair[0], np.float64), np.asarray(pair[1], np.float64)
        if steps.ndim != 1 or steps.shape != values.shape:
            raise ValueError(
                f"series[{name!r}] steps and values must be 1-D of equal length, "
                f"got {steps.shape} and {values.shape}"
            )
        if log_y and np.any(values[np.isfinite(values)] <= 0):
            raise ValueError(f"series[{name!r}] has values <= 0, which a log_y plot cannot show")
        checked[name] = (steps, values)

    figure = _new_figure(6.4, 4.0)
    axis = figure.add_subplot()
    for name, (steps, values) in checked.items():
        marker = "o" if len(steps) <= 20 else None  # markers only where points are few
        axis.plot(steps, values, label=name, linewidth=1.5, marker=marker, markersize=3)
    if log_y:
        axis.set_yscale("log")
    axis.set_xlabel("step")
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    return _save(figure, path)


def save_bar_chart(
    path: str | os.PathLike,
    groups: Mapping[str, Mapping[str, float]],
    *,
    title: str,
    ylabel: str,
) -> str:
    """Grouped bar chart: one group of bars per outer key (e.g. an experiment arm), one bar per
    inner key (e.g. a metric) in each group, each bar labelled with its value.

    Args:
      path: output .png file.
      groups: {group: {bar: value}}; bars missing from a group (or NaN) are left empty.
      title: figure title.
      ylabel: y-axis label.

    Returns:
      path as a str.
    """
    if not groups or not any(groups.values()):
        raise ValueError("groups must hold at least one {group: {bar: value}} entry, got none")
    bar_names: list[str] = []
    for bars in groups.values():
        bar_names.extend(name for name in bars if name not in bar_names)
    group_names = list(groups)
    values = np.array(
        [[float(groups[g].get(b, np.nan)) for b in bar_names] for g in group_names], dtype=np.float64
    )  # [groups, bars]

    bar_width = 0.8 / len(bar_names)
    figure = _new_figure(max(6.4, 1.2 * len(group_names) * max(1, len(bar_names) / 3)), 4.2)
    axis = figure.add_subplot()
    positions = np.arange(len(group_names))
    for bar_index, bar_name in enumerate(bar_names):
        offsets = positions - 0.4 + (bar_index + 0.5) * bar_width
        heights = values[:, bar_index]
        drawn = np.isfinite(heights)
        container = axis.bar(offsets[drawn], heights[drawn], width=bar_width, label=bar_name,
                             color=colormaps["tab10"](bar_index % 10))
        axis.bar_label(container, fmt="%.3g", fontsize=7, padding=1)
    axis.set_xticks(positions, group_names)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.axhline(0.0, color="black", linewidth=0.6)
    axis.grid(True, axis="y", alpha=0.3)
    axis.legend(fontsize=8)
    return _save(figure, path)


def save_paired_claims(path: str | os.PathLike, claims: Sequence[Mapping], *, title: str) -> str:
    """One panel per claim: each seed's baseline and method values joined by a line (the paired gain), and
    each side's mean ± sample std, so the gain can be read against the seed-to-seed spread.

    Args:
      path: output .png file.
      claims: [{'text', 'column', 'baseline': [per seed], 'method': [per seed]}] (equal lengths >= 1), and
        optionally 'baseline_row' / 'method_row' (the x labels), as `jaxface.train.driver.judge_claims`
        records them.
      title: figure title.
    """
    if not claims:
        raise ValueError("claims must hold at least one claim, got none")
    figure = _new_figure(max(6.4, 3.2 * len(claims)), 3.8)
    for i, claim in enumerate(claims):
        pair = [np.asarray(claim[k], np.float64) for k in ("baseline", "method")]
        if pair[0].shape != pair[1].shape or pair[0].ndim != 1 or not pair[0].size:
            raise ValueError(f"claim {claim.get('text')!r}: baseline and method need one value per seed, got "
                             f"{pair[0].shape} and {pair[1].shape}")
        axis = figure.add_subplot(1, len(claims), i + 1)
        for seed, values in enumerate(zip(*pair)):
            axis.plot([0, 1], values, color="grey", alpha=0.7, marker="o", markersize=3,
                      label="one seed" if seed == 0 else None)
        for x, values in enumerate(pair):
            spread = values.std(ddof=1) if values.size > 1 else 0.0
            axis.errorbar([x], [values.mean()], yerr=[spread], color="black", capsize=6, marker="_", markersize=18,
                          label="mean ± std" if x == 0 else None)
        axis.set_xticks([0, 1], ["\n".join(textwrap.wrap(claim.get(f"{side}_row", side), 20))
                                 for side in ("baseline", "method")], fontsize=7)
        axis.set_xlim(-0.5, 1.5)
        axis.set_ylabel(claim["column"])
        axis.set_title("\n".join(textwrap.wrap(str(claim["text"]), 38)), fontsize=8)
        axis.grid(True, axis="y", alpha=0.3)
        if i == 0:
            axis.legend(fontsize=7)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return _save(figure, path)


def save_captioned_grid(
    path: str | os.PathLike,
    images: np.ndarray,
    captions: Sequence[str],
    *,
    max_images: int = 16,
    title: str | None = None,
) -> str:
    """A near-square grid of images, each with a (multi-line) caption below it, e.g. sample faces
    with their predicted attributes.

    Args:
      path: output .png file.
      images: [N, H, W], [N, H, W, 1] or [N, H, W, 3]; uint8, floats in [0, 1], or other floats
        (min-max rescaled per image).
      captions: N strings; '\\n' starts a new line.
      max_images: the first min(N, max_images) images are drawn.
      title: optional figure title.

    Returns:
      path as a str.
    """
    images = _checked_images(images)
    if images.shape[0] == 0:
        raise ValueError("images must hold at least one image, got N = 0")
    if len(captions) != images.shape[0]:
        raise ValueError(f"captions must hold one string per image ({images.shape[0]}), got {len(captions)}")
    if max_images < 1:
        raise ValueError(f"max_images must be >= 1, got {max_images}")
    count = min(images.shape[0], max_images)
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    lines = max(str(c).count("\n") + 1 for c in captions[:count])
    caption_inches = 0.14 * lines
    figure = _new_figure(columns * PANEL_INCHES, rows * (PANEL_INCHES + caption_inches) + (0.4 if title else 0))
    for index in range(count):
        axis = figure.add_subplot(rows, columns, index + 1)
        axis.imshow(_displayable(images[index]), cmap="gray" if images[index].ndim == 2 else None)
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_xlabel(str(captions[index]), fontsize=6.5, loc="left")
    if title:
        figure.suptitle(title, fontsize=10)
    return _save(figure, path)


def _colour_of(class_name: str, class_names: Sequence[str] | None) -> tuple[int, int, int]:
    """The class's colour from PREDICTION_COLOURS (as save_detection_grid colours class indices), as RGB
    bytes: by its index in `class_names` when listed there, else by a stable hash of the name."""
    if class_names is not None and class_name in class_names:
        index = list(class_names).index(class_name)
    else:
        index = zlib.crc32(str(class_name).encode())
    return tuple(int(round(c * 255)) for c in PREDICTION_COLOURS[index % len(PREDICTION_COLOURS)][:3])


def draw_detections(
    image: np.ndarray,
    detections: Sequence[Mapping],
    *,
    class_names: Sequence[str] | None = None,
) -> np.ndarray:
    """A copy of `image` with each detection's box drawn on it at the image's own size.

    Args:
      image: RGB uint8 [H, W, 3] (e.g. the image as experiments.predict read it).
      detections: [{'class': name, 'score': float, 'box_xyxy': [x0, y0, x1, y1]}] in the image's
        pixels, as the recipes' predict_images return them.
      class_names: optional order of the classes, so a class gets the colour save_detection_grid
        gives its index; classes not listed are coloured by a stable hash of their name.

    Boxes are solid outlines coloured by class (PREDICTION_COLOURS), labelled "<class> <score>" in
    white on the class colour inside the box's top-left corner, as in save_detection_grid.

    Returns:
      RGB uint8 [H, W, 3], the same size as `image`; `image` is not changed.
    """
    from PIL import Image, ImageDraw, ImageFont

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be RGB uint8 [H, W, 3], got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    canvas = Image.fromarray(image.copy(), "RGB")
    draw = ImageDraw.Draw(canvas)
    line = max(1, round(max(height, width) / 250))
    font = ImageFont.load_default(size=max(8, round(max(height, width) / 40)))
    for detection in detections:
        x0, y0, x1, y1 = (float(v) for v in detection["box_xyxy"])
        # pixel i covers [i, i + 1): the outline runs along the box's first and last covered pixels
        left, top = min(max(round(x0), 0), width - 1), min(max(round(y0), 0), height - 1)
        right, bottom = min(max(round(x1) - 1, left), width - 1), min(max(round(y1) - 1, top), height - 1)
        colour = _colour_of(detection["class"], class_names)
        draw.rectangle((left, top, right, bottom), outline=colour, width=line)
        label = f"{detection['class']} {float(detection['score']):.2f}"
        text_box = draw.textbbox((0, 0), label, font=font)
        text_width, text_height = text_box[2] - text_box[0] + 2, text_box[3] - text_box[1] + 2
        # inside the box's top-left corner (kept on the image), so boxes touching an edge keep their label
        text_left = max(0, min(left, width - text_width))
        text_top = max(0, min(top, height - text_height))
        draw.rectangle((text_left, text_top, text_left + text_width - 1, text_top + text_height - 1), fill=colour)
        draw.text((text_left + 1 - text_box[0], text_top + 1 - text_box[1]), label, fill="white", font=font)
    return np.asarray(canvas, np.uint8).copy()


def save_detections_image(
    path: str | os.PathLike,
    image: np.ndarray,
    detections: Sequence[Mapping],
    *,
    class_names: Sequence[str] | None = None,
) -> str:
    """draw_detections(image, detections) saved as a PNG of the image's own size; returns path."""
    from PIL import Image

    drawn = draw_detections(image, detections, class_names=class_names)
    path = os.fspath(path)
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    Image.fromarray(drawn, "RGB").save(path, format="PNG")
    return path
