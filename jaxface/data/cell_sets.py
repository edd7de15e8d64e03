"""The nuclei data sets of the box-supervised segmentation recipe (seed 002), with their labels.

`config.data.name`:
  synthetic_cells  the offline TFDS builder (`jaxface.data.synthetic_cells`, prepared on first use)
  folder           your own images + COCO box file under `config.data.path` (`jaxface.data.cell_folder`),
                   cut into `config.data.image_size` tiles; the same tiles serve training (boxes) and
                   evaluation (their masks/), as in box-supervised segmentation the boxes are the
                   annotation of the very images whose masks are wanted
Every split comes back as {'image' [N, S, S, 1] uint8, 'instances' [N, S, S], 'boxes' [N, MAX_CELLS, 4],
'num_cells' [N]} + the labels of `box_labels.split_labels` ('weak', 'weak_ignore', 'box', 'box_ignore', 'gt').
"""

from __future__ import annotations

from jaxface.data import box_labels, cell_folder, synthetic_cells
from jaxface.data.pipeline import in_memory, resolve_data_dir

NAMES = ("synthetic_cells", "folder")


def image_size(data) -> int:
    """Side S of the images (tiles) of `config.data`."""
    return data.image_size if data.name == "folder" else synthetic_cells.CONFIGS[data.builder_config].size


def load_split(data, labels, split: str, limit: int = -1, *, main_process_first=lambda fn: fn()) -> dict:
    """One split of `config.data` (first `limit` examples, -1 all) with `config.labels` applied."""
    if data.name == "folder":
        arrays = cell_folder.load_folder(data.path, data.image_size, synthetic_cells.MAX_CELLS)
        if not arrays.pop("has_masks"):
            raise cell_folder.FolderDataError(
                f"{data.path}: no masks/ folder; the comparison needs ground truth for the fully supervised arm "
                f"and the evaluation (experiments.predict works without)")
    else:
        data_dir, name = resolve_data_dir(data.data_dir), data.builder_config
        main_process_first(lambda: synthetic_cells.prepare(name, data_dir))
        arrays = in_memory(synthetic_cells.data_source(name, split, data_dir)).arrays
    arrays = {k: v[:limit] if limit >= 0 else v for k, v in arrays.items()}
    return {**arrays, **box_labels.split_labels(arrays["boxes"], arrays["num_cells"], arrays["instances"],
                                                labels.shape, labels.edge_width)}
