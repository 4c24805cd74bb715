"""Disentanglement of per-object latents against ground-truth object factors (pure functions, numpy).

Pipeline (:func:`disentanglement_metrics`):

1. **Matching** (:func:`match_slots`): per image, slots are matched one-to-one to the visible ground-truth
   objects by the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) maximising the IoU of
   the argmax segmentation of each slot with each object's mask; pairs with IoU <= ``min_iou`` (default
   0: no overlap at all) are dropped. Every matched pair gives one sample ``(slot latent [D], object
   factors)``.
2. **Informativeness** (:func:`probe_scores`): the samples are split once into train / held-out objects
   (``test_fraction``, seeded permutation). Per factor a linear probe (``LinearRegression`` /
   ``LogisticRegression``) and a small MLP probe (``MLPRegressor`` / ``MLPClassifier``, one hidden layer
   of 64, its L2 weight ``alpha`` chosen from ``MLP_ALPHAS`` by 3-fold cross-validation on the training
   objects: with the default 1e-4 the MLP overfits ~1,700 objects and scores below the linear probe) are
   fitted on standardised latents (``StandardScaler`` fitted on the training objects) and scored on the
   held-out objects: R^2 (``r2_score``) for continuous factors, accuracy for categorical
   ones. Chance is R^2 = 0 and accuracy = the majority-class frequency.
3. **DCI** (Eastwood & Williams 2018; :func:`dci`): one gradient-boosted tree ensemble per factor
   (``GradientBoostingRegressor`` / ``GradientBoostingClassifier``, as disentanglement_lib does) on the
   training objects; its ``feature_importances_`` form column ``j`` of the importance matrix
   ``R [D latents, F factors]``. Trees were chosen over lasso because they see non-linear relations
   (e.g. a latent that codes a factor's square) and give non-negative importances that sum to 1 per
   factor; ``importance="lasso"`` or ``"random_forest"`` are options. With ``P_ij = R_ij / sum_k R_ik``,
   ``D_i = 1 - H_F(P_i.)`` (entropy with log base ``F``) and disentanglement ``= sum_i rho_i D_i``,
   ``rho_i = sum_j R_ij / sum R``; with ``P~_ij = R_ij / sum_i R_ij``, ``C_j = 1 - H_D(P~_.j)`` and
   completeness ``= sum_j (sum_i R_ij / sum R) C_j`` (disentanglement_lib's weighting). Informativeness
   is the trees' held-out score, as for the probes.
4. **MIG** (Chen et al. 2018; :func:`mig`): every latent is discretised into ``bins`` (20) equal-width
   bins; a factor with more than ``bins`` distinct values is discretised the same way, else its values
   are the categories. ``I(z_i; v_j)`` by ``sklearn.metrics.mutual_info_score`` (nats), and per factor
   ``(I_(1) - I_(2)) / H(v_j)`` (the two largest over latents); MIG is the mean over factors with
   ``H(v_j) > 0``.

Factors: a dict ``{name: [M] or [M, c]}``; integer arrays are categorical, float arrays continuous; a
``[M, c]`` factor (e.g. an RGB colour) becomes ``c`` continuous factors ``name[0]``... Orientation is
treated as a plain continuous number: for symmetric shapes (square, ellipse) it is not identifiable
from the image, so its scores are a lower bound.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["dci", "disentanglement_metrics", "flatten_factors", "match_slots", "matched_samples", "mig",
           "probe_scores", "importance_matrix", "split_indices"]


# ----------------------------------------------------------------------------------------------- matching
def match_slots(true_labels: np.ndarray, pred_labels: np.ndarray, num_slots: int,
                object_labels: Sequence[int], min_iou: float = 0.0) -> list[tuple[int, int, float]]:
    """Hungarian slot <-> object matching on IoU for one image.

    Args:
        true_labels: ``[H,W]`` ground-truth label map.
        pred_labels: ``[H,W]`` predicted slot per pixel (``0..num_slots-1``).
        num_slots: ``K``.
        object_labels: the ground-truth labels to match (the visible foreground objects).
        min_iou: pairs with IoU <= this are dropped.

    Returns:
        ``[(object_label, slot, iou), ...]`` sorted by object label.
    """
    objects = np.asarray(list(object_labels), dtype=np.int64)
    if objects.size == 0:
        return []
    true_onehot = true_labels.reshape(-1)[None, :] == objects[:, None]  # [O, P]
    pred_onehot = pred_labels.reshape(-1)[None, :] == np.arange(num_slots)[:, None]  # [K, P]
    inter = true_onehot.astype(np.int64) @ pred_onehot.T.astype(np.int64)  # [O, K]
    union = true_onehot.sum(1)[:, None] + pred_onehot.sum(1)[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return [(int(objects[r]), int(c), float(iou[r, c])) for r, c in zip(rows, cols) if iou[r, c] > min_iou]


def matched_samples(latents: np.ndarray, pred_labels: np.ndarray, true_labels: np.ndarray,
                    factors: Mapping[str, np.ndarray], visibility: np.ndarray | None = None,
                    min_iou: float = 0.0, first_label: int = 1,
                    background_labels: tuple[int, ...] = (0,)) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Match every image and collect one sample per matched object.

    Args:
        latents: ``[N,K,D]`` per-slot latents.
        pred_labels: ``[N,H,W]`` argmax segmentation.
        true_labels: ``[N,H,W]`` ground truth; the object in factor row ``o`` has label ``o + first_label``
            (1 for multi_sprites, whose rows are objects; 0 for converted files, whose rows are indexed by
            label; 4 for ``objects_room_like``, whose labels 0-3 are background regions).
        factors: ``{name: [N,O_max,...]}`` per-object factors.
        visibility: ``[N,O_max]``, rows as in ``factors``; objects with visibility 0 or without a pixel are
            skipped.
        background_labels: labels that are never matched (rows of background regions).

    Returns:
        ``codes [M,D]``, ``{name: [M,...]}`` and ``iou [M]``.
    """
    n, k = latents.shape[:2]
    o_max = next(iter(factors.values())).shape[1] if factors else 0
    background = set(background_labels)
    codes, ious, rows = [], [], []
    for i in range(n):
        present = set(np.unique(true_labels[i]).tolist())
        objects = [o + first_label for o in range(o_max)
                   if (o + first_label) in present and (o + first_label) not in background
                   and (visibility is None or visibility[i, o] > 0)]
        for label, slot, iou in match_slots(true_labels[i], pred_labels[i], k, objects, min_iou):
            codes.append(latents[i, slot])
            ious.append(iou)
            rows.append((i, label - first_label))
    idx = np.array(rows, dtype=np.int64).reshape(-1, 2)
    out = {name: np.asarray(value)[idx[:, 0], idx[:, 1]] for name, value in factors.items()}
    d = latents.shape[2]
    return np.asarray(codes, dtype=np.float64).reshape(-1, d), out, np.asarray(ious)


def flatten_factors(factors: Mapping[str, np.ndarray]) -> dict[str, tuple[np.ndarray, bool]]:
    """``{name: values}`` -> ``{name: (values [M], categorical)}``; ``[M,c]`` factors become ``name[0..c-1]``."""
    out: dict[str, tuple[np.ndarray, bool]] = {}
    for name, value in factors.items():
        value = np.asarray(value)
        categorical = not np.issubdtype(value.dtype, np.floating)
        if value.ndim == 1:
            out[name] = (value, categorical)
        else:
            flat = value.reshape(len(value), -1)
            for c in range(flat.shape[1]):
                out[f"{name}[{c}]"] = (flat[:, c], categorical)
    return out


def split_indices(n: int, test_fraction: float = 0.25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train / held-out split of ``n`` samples (at least one in each when ``n >= 2``)."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = min(max(1, round(n * test_fraction)), n - 1) if n >= 2 else 0
    return np.sort(order[n_test:]), np.sort(order[:n_test])


# ----------------------------------------------------------------------------------------------- probes
MLP_ALPHAS = (1e-2, 1e-1, 1.0, 10.0)  # the MLP probe's L2 weights, chosen by 3-fold CV on the training objects


def _probe(kind: str, categorical: bool, seed: int):
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "linear":
        head = LogisticRegression(max_iter=2000) if categorical else LinearRegression()
    elif kind == "mlp":
        cls = MLPClassifier if categorical else MLPRegressor
        head = cls(hidden_layer_sizes=(64,), max_iter=2000, random_state=seed)
        return GridSearchCV(make_pipeline(StandardScaler(), head), {f"{cls.__name__.lower()}__alpha": MLP_ALPHAS},
                            cv=3)
    else:
        raise ValueError(f"unknown probe {kind!r}; expected linear or mlp")
    return make_pipeline(StandardScaler(), head)


def _score(model, x: np.ndarray, y: np.ndarray, categorical: bool) -> float:
    from sklearn.metrics import accuracy_score, r2_score

    pred = model.predict(x)
    return float(accuracy_score(y, pred) if categorical else r2_score(y, pred))


def probe_scores(codes_train: np.ndarray, y_train: np.ndarray, codes_test: np.ndarray, y_test: np.ndarray,
                 categorical: bool, kind: str = "linear", seed: int = 0) -> float:
    """Held-out R^2 (continuous) or accuracy (categorical) of a ``linear`` or ``mlp`` probe.

    ``codes_* [M,D]``, ``y_* [M]``. A training set with a single class gives that class's frequency in
    the test set (the classifier cannot be fitted); a constant continuous target gives NaN.
    """
    from sklearn.exceptions import ConvergenceWarning

    if categorical and len(np.unique(y_train)) < 2:
        return float(np.mean(y_test == y_train[0])) if len(y_test) else float("nan")
    if not categorical and np.ptp(y_test) == 0:
        return float("nan")
    import warnings

    model = _probe(kind, categorical, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(codes_train, y_train)
    return _score(model, codes_test, y_test, categorical)


# ----------------------------------------------------------------------------------------------- DCI
def importance_matrix(codes: np.ndarray, factors: Mapping[str, tuple[np.ndarray, bool]],
                      method: str = "gbt", seed: int = 0, codes_test: np.ndarray | None = None,
                      factors_test: Mapping[str, tuple[np.ndarray, bool]] | None = None
                      ) -> tuple[np.ndarray, dict[str, float]]:
    """Importance ``R [D,F]`` of every latent for every factor, and the regressors' held-out scores.

    ``method``: ``gbt`` (gradient-boosted trees, default), ``random_forest`` (impurity importances) or
    ``lasso`` (``|coef|`` of ``LassoCV`` / L1 logistic regression on standardised codes, summed over
    classes, normalised to sum 1 per factor like the tree importances).
    """
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        GradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.linear_model import LassoCV, LogisticRegression
    from sklearn.preprocessing import StandardScaler

    d = codes.shape[1]
    names = list(factors)
    r = np.zeros((d, len(names)))
    scores: dict[str, float] = {}
    scaler = StandardScaler().fit(codes)
    for j, name in enumerate(names):
        y, categorical = factors[name]
        if categorical and len(np.unique(y)) < 2 or not categorical and np.ptp(y) == 0:
            scores[name] = float("nan")
            continue
        if method == "gbt":
            model = (GradientBoostingClassifier if categorical else GradientBoostingRegressor)(
                n_estimators=50, max_depth=3, random_state=seed)
            model.fit(codes, y)
            r[:, j] = model.feature_importances_
        elif method == "random_forest":
            model = (RandomForestClassifier if categorical else RandomForestRegressor)(
                n_estimators=100, min_samples_leaf=2, random_state=seed, n_jobs=1)
            model.fit(codes, y)
            r[:, j] = model.feature_importances_
        elif method == "lasso":
            x = scaler.transform(codes)
            if categorical:
                model = LogisticRegression(l1_ratio=1.0, solver="saga", C=1.0, max_iter=5000)
                model.fit(x, y)
                r[:, j] = np.abs(model.coef_).sum(0)
            else:
                model = LassoCV(cv=3, random_state=seed).fit(x, y)
                r[:, j] = np.abs(model.coef_)
            if r[:, j].sum() > 0:  # coefficients of different factors have different units: one unit mass each
                r[:, j] /= r[:, j].sum()
            model = _Scaled(scaler, model)
        else:
            raise ValueError(f"unknown importance method {method!r}; expected gbt, random_forest or lasso")
        if codes_test is not None and factors_test is not None and len(codes_test):
            y_test = factors_test[name][0]
            scores[name] = (_score(model, codes_test, y_test, categorical)
                            if categorical or np.ptp(y_test) > 0 else float("nan"))
    return r, scores


class _Scaled:
    def __init__(self, scaler, model):
        self.scaler, self.model = scaler, model

    def predict(self, x):
        return self.model.predict(self.scaler.transform(x))


def _entropy_rows(p: np.ndarray, base: int) -> np.ndarray:
    """Entropy of every row of ``p`` (rows sum to 1) with log base ``base``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(p > 0, np.log(p), 0.0)
    return -(p * logs).sum(1) / np.log(base)


def dci(r: np.ndarray) -> dict[str, object]:
    """DCI disentanglement and completeness from an importance matrix ``R [D latents, F factors]``.

    Returns ``disentanglement``, ``completeness`` (weighted totals), and per latent / per factor scores.
    Needs ``F >= 2`` for disentanglement and ``D >= 2`` for completeness (else NaN).
    """
    r = np.abs(np.asarray(r, dtype=np.float64))
    d, f = r.shape
    total = r.sum()
    if total <= 0:
        return {"disentanglement": float("nan"), "completeness": float("nan"),
                "per_latent": [float("nan")] * d, "per_factor": [float("nan")] * f}
    row = r.sum(1)
    col = r.sum(0)
    p_rows = np.divide(r, row[:, None], out=np.full_like(r, 1.0 / max(f, 1)), where=row[:, None] > 0)
    p_cols = np.divide(r, col[None, :], out=np.full_like(r, 1.0 / max(d, 1)), where=col[None, :] > 0)
    per_latent = 1 - _entropy_rows(p_rows, f) if f >= 2 else np.full(d, np.nan)
    per_factor = 1 - _entropy_rows(p_cols.T, d) if d >= 2 else np.full(f, np.nan)
    return {"disentanglement": float((row / total * per_latent).sum()),
            "completeness": float((col / total * per_factor).sum()),
            "per_latent": per_latent.tolist(), "per_factor": per_factor.tolist()}


# ----------------------------------------------------------------------------------------------- MIG
def _discretise(values: np.ndarray, bins: int) -> np.ndarray:
    values = np.asarray(values)
    if len(np.unique(values)) <= bins:
        return np.unique(values, return_inverse=True)[1]
    edges = np.histogram_bin_edges(values.astype(np.float64), bins=bins)
    return np.digitize(values, edges[1:-1])


def mig(codes: np.ndarray, factors: Mapping[str, tuple[np.ndarray, bool]], bins: int = 20) -> dict[str, object]:
    """Mutual information gap (``codes [M,D]``, ``D >= 2``). Returns ``mig`` and ``per_factor``."""
    from sklearn.metrics import mutual_info_score

    codes = np.asarray(codes)
    if codes.shape[1] < 2:
        raise ValueError("MIG needs at least two latent dimensions")
    discrete_codes = [np.digitize(c, np.histogram_bin_edges(c, bins=bins)[1:-1]) for c in codes.T]
    per_factor: dict[str, float] = {}
    for name, (values, categorical) in factors.items():
        v = np.unique(values, return_inverse=True)[1] if categorical else _discretise(values, bins)
        h = mutual_info_score(v, v)
        if h <= 0:
            per_factor[name] = float("nan")
            continue
        mi = np.sort([mutual_info_score(z, v) for z in discrete_codes])[::-1]
        per_factor[name] = float((mi[0] - mi[1]) / h)
    valid = [v for v in per_factor.values() if v == v]
    return {"mig": float(np.mean(valid)) if valid else float("nan"), "per_factor": per_factor}


# ----------------------------------------------------------------------------------------------- all
def disentanglement_metrics(codes: np.ndarray, factors: Mapping[str, np.ndarray], *, test_fraction: float = 0.25,
                            seed: int = 0, importance: str = "gbt", bins: int = 20,
                            probes: Sequence[str] = ("linear", "mlp")) -> dict[str, object]:
    """Informativeness (probes), DCI and MIG of ``codes [M,D]`` for ``factors {name: [M] or [M,c]}``.

    Returns a JSON-ready dict: ``num_objects``, ``num_train``/``num_test``, ``factors`` (names, kinds),
    ``factor_names`` (the order of the importance columns), ``informativeness`` ``{probe: {factor: score}}``
    and its per-probe mean ``informativeness_<probe>``,
    ``dci_disentanglement``, ``dci_completeness``, ``dci_informativeness`` (mean of the trees' held-out
    scores) with per-latent/per-factor values, ``importance`` (the ``[D,F]`` matrix as lists), ``mig`` and
    ``mig_per_factor``.
    """
    codes = np.asarray(codes, dtype=np.float64)
    flat = flatten_factors(factors)
    m = len(codes)
    if m < 4:
        raise ValueError(f"disentanglement needs at least 4 matched objects, got {m}")
    train, test = split_indices(m, test_fraction, seed)
    sub = {name: (values[train], cat) for name, (values, cat) in flat.items()}
    held = {name: (values[test], cat) for name, (values, cat) in flat.items()}
    info: dict[str, dict[str, float]] = {}
    for kind in probes:
        info[kind] = {name: probe_scores(codes[train], sub[name][0], codes[test], held[name][0], cat, kind, seed)
                      for name, (_, cat) in flat.items()}
    r, tree_scores = importance_matrix(codes[train], sub, importance, seed, codes[test], held)
    keep = [j for j, name in enumerate(flat) if r[:, j].sum() > 0]
    scores = dci(r[:, keep])
    per_factor = dict.fromkeys(flat, float("nan"))
    for jj, j in enumerate(keep):
        per_factor[list(flat)[j]] = scores["per_factor"][jj]
    migs = mig(codes, flat, bins)

    def mean(values) -> float:
        values = [v for v in values if v == v]
        return float(np.mean(values)) if values else float("nan")

    result: dict[str, object] = {
        "num_objects": m, "num_train": len(train), "num_test": len(test),
        "factors": {name: "categorical" if cat else "continuous" for name, (_, cat) in flat.items()},
        "factor_names": list(flat),  # the column order of ``importance`` (JSON writers may sort dict keys)
        "informativeness": info,
        **{f"informativeness_{kind}": mean(info[kind].values()) for kind in probes},
        "dci_importance_method": importance,
        "dci_disentanglement": scores["disentanglement"], "dci_completeness": scores["completeness"],
        "dci_informativeness": mean(tree_scores.values()), "dci_informativeness_per_factor": tree_scores,
        "dci_completeness_per_factor": per_factor, "dci_disentanglement_per_latent": scores["per_latent"],
        "importance": r.tolist(), "mig": migs["mig"], "mig_per_factor": migs["per_factor"],
    }
    return result
