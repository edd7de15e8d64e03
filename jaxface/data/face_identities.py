"""Identity-labelled faces in memory, for face recognition recipes (seed 001).

`load_identities` reads a prepared `synthetic_faces` split (public API only: `prepare`, `data_source`)
as {'image' [N, S, S, 3] uint8 at the model's side S, 'identity' [N] int32}, in chunks so only one
chunk is held at the stored resolution. `hold_out` splits off the examples of the last identities
(identities never trained on, e.g. for validation).
"""

from __future__ import annotations

import numpy as np

from jaxface.data import synthetic_faces as sf
from jaxface.data.images import resize_images

CHUNK = 512


def load_identities(builder_config: str, split: str, data_dir: str, image_size: int, limit: int = -1) -> dict:
    """The first `limit` examples (-1: all) of `split`, prepared under `data_dir` on first use."""
    sf.prepare(builder_config, data_dir)
    source = sf.data_source(builder_config, split, data_dir)
    n = len(source) if limit < 0 else min(limit, len(source))
    images, ids = [], []
    for start in range(0, n, CHUNK):
        rows = source.__getitems__(list(range(start, min(start + CHUNK, n))))
        images.append(resize_images(np.stack([r["image"] for r in rows]), image_size))
        ids.append(np.asarray([r["identity"] for r in rows], np.int32))
    return {"image": np.concatenate(images), "identity": np.concatenate(ids)}


def hold_out(arrays: dict, first_held: int) -> tuple[dict, dict]:
    """(examples of identities < first_held, examples of identities >= first_held)."""
    held = arrays["identity"] >= first_held
    return {k: v[~held] for k, v in arrays.items()}, {k: v[held] for k, v in arrays.items()}
