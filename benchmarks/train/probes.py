"""Frozen-feature probes of the reference training: weighted kNN and a linear probe.

* **kNN** (Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance
  Discrimination", CVPR 2018; the k=200 / k=20, temperature 0.1 protocol of DINO's
  ``eval_knn.py`` and solo-learn): the ``k`` most cosine-similar train features vote for their
  class with weight ``exp(similarity / temperature)``.
* **Linear probe**: multinomial logistic regression on standardized frozen features, fitted
  full-batch with L-BFGS. The L2 strength is chosen on a held-out part of the *train* split (the
  test split is never looked at), then the probe is refitted on the whole train split.

Both probes see the same features: the backbone's output (or the raw pixels, flattened) in
float32. Everything runs on the features' device; on CPU a full Fashion-MNIST evaluation (60k
train, 10k test, 128-d features) takes well under a minute.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning  # type: ignore[import-untyped]
from torch import Tensor

from benchmarks.train.state import autocast

# L2 strengths tried by the linear probe (the penalty is lambda/2 * ||W||^2 on the mean loss).
L2_GRID: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2)
MAX_ITER = 200  # L-BFGS iterations per fit
VALIDATION_SIZE = 10_000  # train images held out to choose the L2 strength (at most 1/6 of them)


@torch.no_grad()
def extract_features(
    encoder: Callable[[Tensor], Tensor],
    images: Tensor,
    prepare: Callable[[Tensor], Tensor],
    device: torch.device,
    *,
    batch_size: int = 1024,
) -> Tensor:
    """``encoder(prepare(images))`` in batches, flattened to ``(N, F)`` float32 on ``device``."""
    out = []
    for start in range(0, len(images), batch_size):
        x = prepare(images[start : start + batch_size].to(device, non_blocking=True))
        with autocast(device):
            out.append(encoder(x).float().flatten(1))
    return torch.cat(out)


@torch.no_grad()
def knn_accuracy(
    bank: Tensor,
    bank_labels: Tensor,
    queries: Tensor,
    query_labels: Tensor,
    *,
    ks: Sequence[int],
    temperature: float,
    n_classes: int,
    chunk: int = 512,
) -> dict[int, float]:
    """Top-1 accuracy (%) of the weighted kNN vote for each ``k`` in ``ks``.

    Features are L2-normalized here; one top-k search (the largest k) serves every k.
    """
    bank = F.normalize(bank, dim=1)
    queries = F.normalize(queries, dim=1)
    bank_labels = bank_labels.to(bank.device)
    query_labels = query_labels.to(bank.device)
    k_max = min(max(ks), len(bank))
    correct = dict.fromkeys(ks, 0)
    for start in range(0, len(queries), chunk):
        sim = queries[start : start + chunk] @ bank.T  # (B, N_bank)
        top_sim, top_idx = sim.topk(k_max, dim=1)  # sorted, most similar first
        weights, labels = (top_sim / temperature).exp(), bank_labels[top_idx]
        target = query_labels[start : start + chunk]
        for k in ks:
            kk = min(k, k_max)
            votes = torch.zeros(len(sim), n_classes, device=bank.device)
            votes.scatter_add_(1, labels[:, :kk], weights[:, :kk])
            correct[k] += int((votes.argmax(dim=1) == target).sum())
    return {k: 100.0 * c / len(queries) for k, c in correct.items()}


def _standardize(train: Tensor, *others: Tensor) -> list[Tensor]:
    mean, std = train.mean(dim=0), train.std(dim=0).clamp_min(1e-6)
    return [(x - mean) / std for x in (train, *others)]


def fit_logistic_regression(
    x: Tensor, y: Tensor, *, n_classes: int, l2: float, max_iter: int = MAX_ITER
) -> tuple[Tensor, Tensor]:
    """Multinomial logistic regression minimizing ``mean cross-entropy + l2 / 2 * ||W||^2``
    (no penalty on the bias), with scikit-learn's L-BFGS solver (``C = 1 / (l2 * N)``).
    Returns the weight ``(F, n_classes)`` and the bias ``(n_classes,)`` as float64."""
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

    y_np = y.cpu().numpy()
    if set(y_np.tolist()) != set(range(n_classes)):
        raise ValueError(f"every one of the {n_classes} classes must occur in the fitting labels")
    model = LogisticRegression(C=1.0 / (l2 * len(x)), max_iter=max_iter, tol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=ConvergenceWarning)
        model.fit(x.double().cpu().numpy(), y_np)
    weight = torch.from_numpy(model.coef_.T.copy()).to(x.device)
    bias = torch.from_numpy(model.intercept_.copy()).to(x.device)
    return weight, bias


def _accuracy(x: Tensor, y: Tensor, weight: Tensor, bias: Tensor) -> float:
    pred = (x.double() @ weight + bias).argmax(dim=1)
    return 100.0 * float((pred == y.to(x.device)).double().mean())


@dataclass
class LinearProbeResult:
    top1: float  # test accuracy (%) of the probe refitted on the whole train split
    l2: float  # the L2 strength chosen on the held-out part of the train split
    validation: dict[float, float] = field(default_factory=dict)  # l2 -> held-out accuracy (%)


def linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    n_classes: int,
    l2_grid: Sequence[float] = L2_GRID,
    seed: int = 0,
) -> LinearProbeResult:
    """Test accuracy of a logistic-regression probe whose L2 strength is chosen on held-out
    train images (a fixed random ``VALIDATION_SIZE``, at most a sixth of them)."""
    order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed))
    n_val = min(VALIDATION_SIZE, len(train_x) // 6)
    val_idx, fit_idx = order[:n_val].to(train_x.device), order[n_val:].to(train_x.device)
    fit_x, val_x = _standardize(train_x[fit_idx], train_x[val_idx])
    validation = {}
    for l2 in l2_grid:
        w, b = fit_logistic_regression(fit_x, train_y[fit_idx], n_classes=n_classes, l2=l2)
        validation[l2] = _accuracy(val_x, train_y[val_idx], w, b)
    best = max(l2_grid, key=lambda l2: (validation[l2], l2))  # ties: the stronger penalty
    full_x, full_test = _standardize(train_x, test_x)
    w, b = fit_logistic_regression(full_x, train_y, n_classes=n_classes, l2=best)
    return LinearProbeResult(_accuracy(full_test, test_y, w, b), best, validation)
