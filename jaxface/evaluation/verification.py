"""1:1 face verification and image quality metrics (numpy, on the host).

Verification. A pair (i, j) is accepted as "same identity" when the Euclidean distance of its
embeddings d_ij <= t.
  - 10-fold protocol (LFW view 2 / insightface `evaluate`): the pairs are split into k folds; for each
    fold the threshold maximising the accuracy on the other k - 1 folds is applied to it; the result
    is the mean and (population) std of the k fold accuracies. Here the folds are stratified at
    random (`stratified_folds`): each fold holds ~1/k of the positive and of the negative pairs.
  - ROC: for every threshold, TAR = #{positive pairs accepted} / #positives and FAR = #{negative pairs
    accepted} / #negatives.
  - TAR at FAR = f: the threshold admits at most floor(f * N_neg) negative pairs (the distances strictly
    below the (floor(f N_neg) + 1)-th smallest negative distance are accepted). With N_neg < 1 / f the
    threshold admits none (FAR 0); `tar_at_far` reports whether the requested FAR is resolvable.
Image quality, for uint8 or float images on the same [0, L] scale:
  PSNR = 10 log10(L^2 / MSE) per image (inf when identical), averaged over images.
  SSIM (Wang et al. 2004) per channel with an 11-tap Gaussian window (sigma 1.5, borders reflected),
    C1 = (0.01 L)^2, C2 = (0.03 L)^2:
      SSIM(x, y) = mean over pixels and channels of
                   (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2)),
    averaged over images.
"""

from __future__ import annotations

import numpy as np

from jaxface.data.images import separable_gaussian

PAIR_TYPES = ("LR-LR", "LR-HR", "HR-HR")  # probe-gallery resolutions of `verify_pair_types`

# --- pairs ---------------------------------------------------------------------------------------
def all_pairs(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every unordered pair i < j: (pairs [M, 2], same [M] bool)."""
    ids = np.asarray(ids)
    i, j = np.triu_indices(len(ids), k=1)
    return np.stack([i, j], axis=1), ids[i] == ids[j]


def balanced_pairs(ids: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Every positive pair i < j and as many negative pairs drawn without replacement from all negative
    pairs (seeded), positives first: (pairs [M, 2], same [M] bool), as LFW's equal split of pairs."""
    pairs, same = all_pairs(ids)
    negatives = np.flatnonzero(~same)
    count = min(int(same.sum()), len(negatives))
    chosen = np.random.default_rng([seed, 1]).choice(negatives, size=count, replace=False)
    keep = np.concatenate([np.flatnonzero(same), np.sort(chosen)])
    return pairs[keep], same[keep]


def stratified_folds(same: np.ndarray, num_folds: int, seed: int) -> np.ndarray:
    """[M] fold index of each pair: positives and negatives each shuffled (seeded) and dealt round-robin."""
    same = np.asarray(same, bool)
    if num_folds < 2:
        raise ValueError(f"num_folds must be >= 2, got {num_folds}")
    folds = np.empty(len(same), np.int64)
    rng = np.random.default_rng([seed, 2])
    for group in (np.flatnonzero(same), np.flatnonzero(~same)):
        folds[rng.permutation(group)] = np.arange(len(group)) % num_folds
    return folds


def pair_distances(a: np.ndarray, b: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """||a[i] - b[j]||_2 for each pair (i, j): a holds the first image's embeddings, b the second's."""
    return np.linalg.norm(np.asarray(a, np.float64)[pairs[:, 0]] - np.asarray(b, np.float64)[pairs[:, 1]], axis=-1)


# --- thresholds and accuracy ---------------------------------------------------------------------
def best_threshold(distances: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """(t, accuracy) maximising mean(same == (d <= t)) over the cut points between distinct sorted
    distances (t the midpoint; below the smallest or above the largest distance at the ends; ties
    keep the smallest t)."""
    d, s = np.asarray(distances, np.float64), np.asarray(same, bool)
    order = np.argsort(d, kind="stable")
    d, s = d[order], s[order]
    n = len(d)
    accepted_pos = np.concatenate([[0], np.cumsum(s)])          # positives among the first c accepted
    rejected_neg = (~s).sum() - np.concatenate([[0], np.cumsum(~s)])
    correct = accepted_pos + rejected_neg                        # c = 0 .. n accepted
    valid = np.ones(n + 1, bool)
    valid[1:n] = d[1:] > d[:-1]                                  # cannot cut between equal distances
    c = int(np.argmax(np.where(valid, correct, -1)))
    if c == 0:
        t = d[0] - 1.0 if n else 0.0
    elif c == n:
        t = d[-1] + 1.0
    else:
        t = 0.5 * (d[c - 1] + d[c])
    return float(t), float(correct[c] / max(n, 1))


def accuracy_at(distances: np.ndarray, same: np.ndarray, threshold: float) -> float:
    return float(np.mean((np.asarray(distances) <= threshold) == np.asarray(same, bool)))


def kfold_accuracy(distances: np.ndarray, same: np.ndarray, folds: np.ndarray) -> dict:
    """The k-fold protocol (module docstring): {'mean', 'std', 'accuracies' [k], 'thresholds' [k]}."""
    distances, same, folds = np.asarray(distances), np.asarray(same, bool), np.asarray(folds)
    accuracies, thresholds = [], []
    for k in np.unique(folds):
        train, test = folds != k, folds == k
        t, _ = best_threshold(distances[train], same[train])
        thresholds.append(t)
        accuracies.append(accuracy_at(distances[test], same[test], t))
    return {"mean": float(np.mean(accuracies)), "std": float(np.std(accuracies)),
            "accuracies": accuracies, "thresholds": thresholds}


def roc_curve(distances: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(far, tar, thresholds), one point per distinct distance t (accept d <= t), far increasing."""
    d, s = np.asarray(distances, np.float64), np.asarray(same, bool)
    if s.all() or not s.any():
        raise ValueError("a ROC curve needs both positive and negative pairs")
    thresholds = np.unique(d)
    pos, neg = np.sort(d[s]), np.sort(d[~s])
    tar = np.searchsorted(pos, thresholds, side="right") / len(pos)
    far = np.searchsorted(neg, thresholds, side="right") / len(neg)
    return far, tar, thresholds


def tar_at_far(distances: np.ndarray, same: np.ndarray, far: float) -> dict:
    """{'tar', 'far' (achieved), 'threshold', 'negatives', 'resolvable' (far * negatives >= 1)}."""
    d, s = np.asarray(distances, np.float64), np.asarray(same, bool)
    neg = np.sort(d[~s])
    allowed = int(np.floor(far * len(neg) + 1e-9))
    threshold = neg[allowed] if allowed < len(neg) else np.inf  # accept d < threshold
    accepted = d[s] < threshold
    return {"tar": float(accepted.mean()), "far": float(np.mean(neg < threshold)), "threshold": float(threshold),
            "negatives": int(len(neg)), "resolvable": bool(far * len(neg) >= 1)}


# --- image quality -------------------------------------------------------------------------------
def psnr(x: np.ndarray, y: np.ndarray, max_value: float = 255.0) -> float:
    """Mean over images [N, H, W, C] of 10 log10(L^2 / MSE)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    mse = np.mean((x - y) ** 2, axis=tuple(range(1, x.ndim)))
    with np.errstate(divide="ignore"):
        return float(np.mean(10.0 * np.log10(max_value ** 2 / mse)))


def _gaussian_filter(x: np.ndarray, sigma: float = 1.5, radius: int = 5) -> np.ndarray:
    """Separable Gaussian over axes 1, 2 of [N, H, W, C], borders reflected ('abc|cba')."""
    return separable_gaussian(x, sigma, radius, axes=(1, 2))


def ssim(x: np.ndarray, y: np.ndarray, max_value: float = 255.0) -> float:
    """Mean SSIM over images [N, H, W, C] (module docstring)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    c1, c2 = (0.01 * max_value) ** 2, (0.03 * max_value) ** 2
    mx, my = _gaussian_filter(x), _gaussian_filter(y)
    vx = _gaussian_filter(x * x) - mx * mx
    vy = _gaussian_filter(y * y) - my * my
    cxy = _gaussian_filter(x * y) - mx * my
    index = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(np.mean(index))


# --- one model's verification report -------------------------------------------------------------
def verify_pair_types(hr: np.ndarray, lr: np.ndarray, ids: np.ndarray, *, num_folds: int, fars, seed: int) -> dict:
    """Embeddings of the same images at high (hr [N, E]) and low (lr [N, E]) resolution ->
    {'LR-LR', 'LR-HR' (LR probe i vs HR gallery j), 'HR-HR': k-fold result on `balanced_pairs`,
     'tar': {str(far): `tar_at_far` on all LR-LR pairs}, 'roc': (far, tar) of all LR-LR pairs}."""
    pairs, same = balanced_pairs(ids, seed)
    folds = stratified_folds(same, num_folds, seed)
    out = {t: kfold_accuracy(pair_distances(a, b, pairs), same, folds)
           for t, (a, b) in {"LR-LR": (lr, lr), "LR-HR": (lr, hr), "HR-HR": (hr, hr)}.items()}
    everything, all_same = all_pairs(ids)
    distances = pair_distances(lr, lr, everything)
    out["tar"] = {str(f): tar_at_far(distances, all_same, f) for f in fars}
    out["roc"] = roc_curve(distances, all_same)[:2]
    return out


def save_roc(path: str, curves: dict, *, title: str) -> str:
    """A PNG of TAR against FAR (log axis) with one line per {name: (far, tar)}."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # matplotlib only where figures are drawn
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.0), dpi=120)
    FigureCanvasAgg(figure)
    axis = figure.add_subplot()
    for name, (far, tar) in curves.items():
        axis.plot(np.maximum(far, 1e-6), tar, label=name, linewidth=1.5)
    axis.set(xscale="log", xlabel="FAR (log; 0 drawn at 1e-6)", ylabel="TAR", title=title)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    figure.savefig(path, format="png", bbox_inches="tight")
    return path


def table_columns(result: dict, fars) -> dict:
    """A `verify_pair_types` result as percentages: {'<pair type> acc %', '<pair type> ±', 'TAR@FAR=<f> %'}."""
    out = {f"{t} {c}": 100 * result[t][k] for t in PAIR_TYPES for c, k in (("acc %", "mean"), ("±", "std"))}
    return {**out, **{f"TAR@FAR={f} %": 100 * result["tar"][str(f)]["tar"] for f in fars}}


def validation_threshold(embeddings: np.ndarray, ids: np.ndarray, seed: int) -> dict:
    """{'threshold', 'accuracy', 'pairs'}: `best_threshold` on the `balanced_pairs` of a held-out split."""
    pairs, same = balanced_pairs(ids, seed)
    threshold, accuracy = best_threshold(pair_distances(embeddings, embeddings, pairs), same)
    return {"threshold": threshold, "accuracy": accuracy, "pairs": int(len(same))}
