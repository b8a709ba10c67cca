"""The recipes of docs/guides/recipes.rst run: a few steps each on small random images.

The documentation includes these files verbatim (``literalinclude``), so what is tested here is
what a reader copies. Only the sizes are made small (``Config`` fields); the MoCo v2 queue keeps
its 65,536 entries and SwAV its 2 + 6 crops.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn

import sslosses

RECIPES = Path(__file__).resolve().parents[1] / "docs" / "recipes"
NAMES = [
    "simclr",
    "moco_v2",
    "moco_v3",
    "byol",
    "simsiam",
    "swav",
    "barlow_twins",
    "dino",
    "dinov2",
    "vicreg",
    "supcon",
    "nnclr",
]
FEATURES = 16
N = 8


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"sslosses_recipe_{name}", RECIPES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up by name
    spec.loader.exec_module(module)
    return module


def _backbone() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, FEATURES, 3, stride=2, padding=1),
        nn.BatchNorm2d(FEATURES),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


class TinyViT(nn.Module):
    """The token model the DINOv2 recipe expects: ``(images, masks) -> (cls (N, F), patches
    (N, P, F))``, masked patch embeddings replaced by a learned mask token (as dinov2's ViT)."""

    def __init__(self, dim: int = FEATURES, patch: int = 6) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.block = nn.TransformerEncoderLayer(dim, 2, 2 * dim, dropout=0.0, batch_first=True)

    def forward(
        self, images: torch.Tensor, masks: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.embed(images).flatten(2).transpose(1, 2)  # (N, P, F)
        if masks is not None:
            x = torch.where(masks.unsqueeze(-1), self.mask_token.to(x.dtype), x)
        x = self.block(torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1))
        return x[:, 0], x[:, 1:]


def _backbone_for(name: str) -> nn.Module:
    return TinyViT() if name == "dinov2" else _backbone()


_SMALL_DINO: dict[str, object] = {  # DINO and DINOv2 share their small sizes
    "global_size": 24,
    "local_size": 12,
    "local_count": 2,
    "out_dim": 32,
    "hidden_dim": 32,
    "bottleneck_dim": 8,
    "warmup_steps": 3,
    "freeze_last_layer_steps": 1,
    "total_steps": 10,
}
SMALL: dict[str, dict[str, object]] = {
    "simclr": {"image_size": 24},
    "moco_v2": {"image_size": 24},  # queue_size stays 65536
    "moco_v3": {"image_size": 24, "mlp_dim": 64, "dim": 32, "total_steps": 10},
    "byol": {"image_size": 24, "hidden_dim": 64, "proj_dim": 32, "total_steps": 10},
    "simsiam": {"image_size": 24, "dim": 64, "pred_dim": 16},
    "swav": {
        "global_size": 24,
        "local_size": 12,
        "blur_kernel_size": None,
        "hidden_dim": 32,
        "dim": 16,
        "n_prototypes": 20,
        "queue_length": 2 * N,
        "freeze_prototypes_steps": 1,
    },
    "barlow_twins": {"image_size": 24, "projector": "64-64-64"},
    "vicreg": {"image_size": 24, "mlp": "64-64-64", "lr": 0.05},
    "dino": {
        **_SMALL_DINO,
        "warmup_teacher_temperature": 0.04,
        "teacher_temperature": 0.07,
    },
    "dinov2": _SMALL_DINO,  # dinov2's temperatures are 0.04 -> 0.07 already
    "supcon": {"image_size": 24},
    "nnclr": {
        "image_size": 24,
        "hidden_dim": 32,
        "dim": 16,
        "pred_hidden_dim": 32,
        "queue_size": 20,
    },
}


def _images(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (N, 3, 32, 32), dtype=torch.uint8, generator=g)


def _params(recipe: object) -> list[torch.Tensor]:
    opt: torch.optim.Optimizer = recipe.optimizer  # type: ignore[attr-defined]
    return [p.detach().clone() for group in opt.param_groups for p in group["params"]]


def test_every_recipe_file_is_tested_and_documented() -> None:
    assert sorted(p.stem for p in RECIPES.glob("*.py")) == sorted(NAMES)
    page = (RECIPES.parent / "guides" / "recipes.rst").read_text()
    for name in NAMES:
        assert f"literalinclude:: ../recipes/{name}.py" in page


@pytest.mark.parametrize("name", NAMES)
def test_recipe_trains(name: str) -> None:
    module = _load(name)
    recipe = module.Recipe(_backbone_for(name), module.Config(feature_dim=FEATURES, **SMALL[name]))
    before = _params(recipe)
    losses = [recipe.step(_images(i)) for i in range(3)]
    assert all(loss.dim() == 0 and math.isfinite(loss.item()) for loss in losses)
    after = _params(recipe)
    changed = sum(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert changed >= len(before) // 2  # the optimizer moved the weights


def test_moco_v2_queue_fills_and_first_step_has_no_negatives() -> None:
    module = _load("moco_v2")
    recipe = module.Recipe(_backbone(), module.Config(feature_dim=FEATURES, **SMALL["moco_v2"]))
    assert recipe.queue.size == 65536
    first = recipe.step(_images(0))
    assert first.item() == 0.0  # empty queue, in-batch negatives off: a single logit
    second = recipe.step(_images(1))
    assert second.item() > 0.0
    assert len(recipe.queue) == 2 * N and recipe.key_encoder.step == 2
    keys = recipe.queue.features()
    torch.testing.assert_close(keys.norm(dim=1), torch.ones(2 * N))  # normalized keys


def test_byol_and_moco_v3_targets_follow_their_schedule() -> None:
    for name, attr in [("byol", "target"), ("moco_v3", "momentum_encoder")]:
        module = _load(name)
        recipe = module.Recipe(_backbone(), module.Config(feature_dim=FEATURES, **SMALL[name]))
        ema: sslosses.EMA = getattr(recipe, attr)
        start = ema.momentum
        for i in range(2):
            recipe.step(_images(i))
        assert ema.step == 2
        assert ema.momentum == sslosses.cosine_schedule(2, 10, start, 1.0) > start


def test_swav_uses_mixed_crop_sizes_a_full_queue_and_frozen_prototypes() -> None:
    module = _load("swav")
    recipe = module.Recipe(_backbone(), module.Config(feature_dim=FEATURES, **SMALL["swav"]))
    crops = recipe.transform(_images(0))
    assert [tuple(c.shape[-2:]) for c in crops] == [(24, 24)] * 2 + [(12, 12)] * 6
    with pytest.raises(RuntimeError, match="Sizes of tensors must match"):
        torch.cat(crops)  # why the recipe uses forward_multicrop

    recipe.step(_images(0))  # step 0: prototypes frozen (freeze_prototypes_steps=1)
    normalized = nn.functional.normalize(recipe.prototypes.weight.detach(), dim=1)
    torch.testing.assert_close(recipe.prototypes.weight.detach(), normalized)  # not stepped
    assert [len(q) for q in recipe.queues] == [N, N]
    recipe.step(_images(1))  # the queues become full after this step's push
    assert not torch.allclose(recipe.prototypes.weight.norm(dim=1), torch.ones(20))  # stepped
    assert all(q.is_full for q in recipe.queues)
    loss = recipe.step(_images(2))  # with the queue
    assert math.isfinite(loss.item())


def test_dino_teacher_sees_global_crops_and_center_updates_explicitly() -> None:
    module = _load("dino")
    recipe = module.Recipe(_backbone(), module.Config(feature_dim=FEATURES, **SMALL["dino"]))
    crops = recipe.transform(_images(0))
    assert [tuple(c.shape[-2:]) for c in crops] == [(24, 24)] * 2 + [(12, 12)] * 2
    last = recipe.student[1].last_layer
    frozen = [p.detach().clone() for p in last.parameters()]
    assert torch.equal(recipe.center.center, torch.zeros(32))
    recipe.step(_images(0))  # step 0: last layer frozen (freeze_last_layer_steps=1)
    for before, after in zip(frozen, last.parameters(), strict=True):
        torch.testing.assert_close(after.detach(), before)
    assert not torch.equal(recipe.center.center, torch.zeros(32))  # updated by the step
    assert recipe.teacher.step == 1
    recipe.step(_images(1))  # step 1: the last layer trains
    assert any(not torch.equal(a, b) for a, b in zip(frozen, last.parameters(), strict=True))
    assert math.isfinite(recipe.step(_images(2)).item())


def test_vicreg_recipe_keeps_the_three_terms_of_its_loss() -> None:
    module = _load("vicreg")
    recipe = module.Recipe(_backbone(), module.Config(feature_dim=FEATURES, **SMALL["vicreg"]))
    loss = recipe.step(_images(0))
    terms = recipe.last_terms
    assert terms is not None
    weighted = 25.0 * terms.invariance + 25.0 * terms.variance + 1.0 * terms.covariance
    torch.testing.assert_close(loss, weighted.detach())
    assert min(terms.invariance.item(), terms.variance.item(), terms.covariance.item()) >= 0


@pytest.mark.parametrize("centering", ["center", "sinkhorn"])
def test_dinov2_combines_dino_ibot_and_koleo(centering: str) -> None:
    module = _load("dinov2")
    cfg = module.Config(feature_dim=FEATURES, centering=centering, **SMALL["dinov2"])
    recipe = module.Recipe(TinyViT(), cfg)
    masks = module.random_masks(8, 16, cfg, torch.Generator().manual_seed(0))
    counts = masks.sum(dim=1).tolist()
    assert counts[:4] == [1, 3, 5, 8] and counts[4:] == [0] * 4  # 10%..50% of 16, half masked
    loss = recipe.step(_images(0))
    assert math.isfinite(loss.item())
    if centering == "center":  # both centers updated after the losses, by hand
        assert not torch.equal(recipe.cls_center.center, torch.zeros(32))
        assert not torch.equal(recipe.patch_center.center, torch.zeros(32))
    else:
        assert recipe.cls_center is None and recipe.patch_center is None
    assert recipe.teacher.step == 1
    # the loss is linear in the KoLeo weight: same weights, images, crops and masks
    model = TinyViT()
    losses = []
    for weight in (0.0, 1.0, 2.0):
        torch.manual_seed(0)  # the crops' randomness
        fresh = copy.deepcopy(model)
        losses.append(module.Recipe(fresh, replace(cfg, koleo_weight=weight)).step(_images(1)))
    koleo = losses[1] - losses[0]
    assert abs(koleo.item()) > 1e-3
    torch.testing.assert_close(losses[2] - losses[1], koleo, rtol=1e-4, atol=1e-5)


def test_supcon_trains_with_labels_and_distinct_labels_are_its_simclr_mode() -> None:
    module = _load("supcon")
    cfg = module.Config(feature_dim=FEATURES, **SMALL["supcon"])
    recipe = module.Recipe(_backbone(), cfg)
    before = _params(recipe)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    losses = [recipe.step(_images(i), labels) for i in range(2)]
    assert all(math.isfinite(loss.item()) for loss in losses)
    assert any(not torch.equal(a, b) for a, b in zip(before, _params(recipe), strict=True))
    # the labels reach the loss: distinct labels are the unlabelled loss, shared ones are not
    model = _backbone()
    results = []
    for step_labels in (None, torch.arange(N) * 3, labels):
        torch.manual_seed(0)  # the same views
        fresh = module.Recipe(copy.deepcopy(model), cfg)
        results.append(fresh.step(_images(5), step_labels))
    torch.testing.assert_close(results[1], results[0], rtol=1e-6, atol=1e-6)
    assert abs(results[2].item() - results[0].item()) > 1e-3


def test_nnclr_searches_the_batch_first_then_the_queue_it_fills() -> None:
    module = _load("nnclr")
    recipe = module.Recipe(_backbone(), module.Config(feature_dim=FEATURES, **SMALL["nnclr"]))
    assert len(recipe.queue) == 0
    recipe.step(_images(0))  # an empty queue: the batch's own projections are the support
    assert len(recipe.queue) == N  # one push per step, after the loss
    first = recipe.queue.features()
    recipe.step(_images(1))
    assert len(recipe.queue) == 2 * N and torch.equal(recipe.queue.features()[:N], first)
    loss = recipe.step(_images(2))  # 20 rows: the queue wrapped around
    assert recipe.queue.is_full and math.isfinite(loss.item())
    assert not torch.equal(recipe.queue.features()[:N], first)
