"""The nuclei data sets of the box-supervised segmentation recipe (seed 002), with their labels.

`config.data.name`:
  synthetic_cells  the offline TFDS builder (`jaxface.data.synthetic_cells`, prepared on first use)
  folder           your own images + COCO box file under `config.data.path` (`jaxface.data.cell_folder`);
                   the same images serve training (boxes) and evaluation (masks/ or polygons), as in
                   box-supervised segmentation the boxes are the annotation of the very images whose masks
                   are wanted. Training reads them whole (`load_split(..., training=True)`: canvases with an
                   'extent' [N, 2], labels drawn on the whole image) and `train_batches` cuts random
                   `config.data.image_size` crops from them; evaluation reads them cut into tiles of that size.
Every split comes back as {'image' [N, S, S, 1] uint8, 'instances' [N, S, S], 'boxes' [N, MAX_CELLS, 4],
'num_cells' [N]} + the labels of `box_labels.split_labels` ('weak', 'weak_ignore', 'box', 'box_ignore', 'gt')
(folder training: S x S is the canvas, boxes [N, K, 4] with K the most boxes of an image).
"""

from __future__ import annotations

from jaxface.data import box_labels, cell_folder, synthetic_cells
from jaxface.data.pipeline import ArraySource, ShuffledBatches, in_memory, resolve_data_dir

NAMES = ("synthetic_cells", "folder")


def image_size(data) -> int:
    """Side S of the images (tiles) of `config.data`."""
    return data.image_size if data.name == "folder" else synthetic_cells.CONFIGS[data.builder_config].size


def load_split(data, labels, split: str, limit: int = -1, *, training: bool = False,
               main_process_first=lambda fn: fn()) -> dict:
    """One split of `config.data` (first `limit` examples, -1 all) with `config.labels` applied; `training`:
    folder images whole (for `train_batches`' random crops) instead of tiles."""
    if data.name == "folder":
        arrays = cell_folder.load_canvases(data.path, data.image_size) if training else \
            cell_folder.load_folder(data.path, data.image_size, synthetic_cells.MAX_CELLS)
        if not arrays.pop("has_masks"):
            raise cell_folder.FolderDataError(
                f"{data.path}: no ground truth (a masks/ folder or COCO 'segmentation' polygons); the comparison "
                f"needs it for the fully supervised arm and the evaluation (experiments.predict works without)")
    else:
        data_dir, name = resolve_data_dir(data.data_dir), data.builder_config
        main_process_first(lambda: synthetic_cells.prepare(name, data_dir))
        arrays = in_memory(synthetic_cells.data_source(name, split, data_dir)).arrays
    arrays = {k: v[:limit] if limit >= 0 else v for k, v in arrays.items()}
    return {**arrays, **box_labels.split_labels(arrays["boxes"], arrays["num_cells"], arrays["instances"],
                                                labels.shape, labels.edge_width)}


def train_batches(data, split: dict, labels: dict, batch_size: int, seed: int) -> ShuffledBatches:
    """Shuffled batches of {'image': split['image'], **labels}; a folder split loaded for training is cut to
    random `data.image_size` crops (`cell_folder.RandomCrops`: a pure function of (seed, step, example))."""
    arrays = {"image": split["image"], **labels}
    if "extent" not in split:
        return ShuffledBatches(ArraySource(arrays), global_batch_size=batch_size, seed=seed)
    return cell_folder.RandomCrops(ArraySource({**arrays, "extent": split["extent"]}), size=data.image_size,
                                   global_batch_size=batch_size, seed=seed)


def predict_probs(predictor, images, tile: int, margin: int, align: int):
    """A `train.predict.Predictor`'s 'probs' on `images` [N, H, W, 1]: in whole batches when H, W <= tile;
    else image by image through overlapping tiles stitched (`evaluation.tiling`, exact for margin >= the
    receptive-field radius), so that large folder canvases need no more memory than a batch of tiles."""
    import numpy as np

    from jaxface.evaluation.tiling import predict_tiled

    if max(images.shape[1:3]) <= tile:
        return predictor.predict_split(ArraySource({"image": images}))["probs"]
    tile, size = max(tile, 2 * margin + align), predictor.batch_size

    def fn(x):  # always a full batch: compiled once
        return predictor({"image": np.concatenate([x, np.repeat(x[-1:], size - len(x), 0)])})["probs"][:len(x)]
    out = []
    for image in images:
        h, w = image.shape[:2]
        padded = np.pad(image, ((0, max(tile - h, 0)), (0, max(tile - w, 0)), (0, 0)), mode="edge")
        out.append(predict_tiled(fn, padded, tile, margin, align=align, batch=size)[:h, :w])
    return np.stack(out)
