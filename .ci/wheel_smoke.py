"""Check the built wheel as a user gets it: run with the clean venv's python, outside the tree.

Usage: ``python -I .ci/wheel_smoke.py SOURCE_PACKAGE_DIR``, with ``sslosses`` installed from the
wheel into a venv that holds only torch. It fails (exit 1) when

- a module of the source package is missing from the installed one (or the wheel is shadowed by
  the source tree), or ``py.typed`` is not shipped;
- importing any public module fails (e.g. an optional dependency imported at import time);
- a loss of ``sslosses.functional`` has no smoke call below, or its forward/backward fails or
  gives a non-finite value or gradient.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path

import torch


def module_names(package_dir: Path) -> set[str]:
    """Dotted names of every module under ``package_dir`` (a package folder named ``sslosses``)."""
    names = set()
    for path in package_dir.rglob("*.py"):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.add(".".join(parts))
    return names


def missing_modules(source_dir: Path, installed_dir: Path) -> list[str]:
    """Modules (and ``py.typed``) of the source package that the installed package lacks."""
    missing = sorted(module_names(source_dir) - module_names(installed_dir))
    if (source_dir / "py.typed").exists() and not (installed_dir / "py.typed").exists():
        missing.append("py.typed")
    return missing


def _pair(requires_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(8, 16, generator=g, requires_grad=requires_grad)
    b = torch.randn(8, 16, generator=g, requires_grad=requires_grad)
    return a, b


def _scores(views: int, k: int = 12) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(8, k, generator=g, requires_grad=True) for _ in range(views)]


Smoke = Callable[[], tuple[torch.Tensor, list[torch.Tensor]]]


def smoke_calls() -> dict[str, Smoke]:
    """One tiny forward per function of ``sslosses.functional``: (output, inputs with grad)."""
    import sslosses.functional as SF

    def pair_loss(fn: Callable[..., torch.Tensor], *, target_grad: bool = True) -> Smoke:
        def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
            a, b = _pair()
            return fn(a, b), [a, b] if target_grad else [a]

        return run

    def info_nce() -> tuple[torch.Tensor, list[torch.Tensor]]:
        a, b = _pair()
        negatives = torch.randn(20, 16)
        return SF.info_nce(a, b, negatives=negatives), [a, b]

    def sinkhorn() -> tuple[torch.Tensor, list[torch.Tensor]]:
        (s,) = _scores(1)
        return SF.sinkhorn(s.detach()).sum(), []

    def swav() -> tuple[torch.Tensor, list[torch.Tensor]]:
        scores = _scores(4)
        return SF.swav_loss(scores), scores

    def dino() -> tuple[torch.Tensor, list[torch.Tensor]]:
        student = _scores(4)
        teacher = [s.detach() for s in _scores(2)]
        return SF.dino_loss(student, teacher, center=torch.zeros(12)), student

    def koleo() -> tuple[torch.Tensor, list[torch.Tensor]]:
        a, _ = _pair()
        return SF.koleo_loss(a) + SF.koleo_loss(a, chunk_size=3), [a]

    def mmcr() -> tuple[torch.Tensor, list[torch.Tensor]]:
        a, b = _pair()
        return SF.mmcr_loss([a, b], lambd=0.1), [a, b]

    def tico() -> tuple[torch.Tensor, list[torch.Tensor]]:
        a, b = _pair()
        from sslosses import TiCoCovariance

        covariance = TiCoCovariance(a.shape[1])
        covariance.update(a)
        return SF.tico_loss(a, b, covariance.covariance), [a, b]

    def wmse() -> tuple[torch.Tensor, list[torch.Tensor]]:
        views = [torch.randn(16, 3, requires_grad=True) for _ in range(2)]
        gen = torch.Generator().manual_seed(0)
        return SF.wmse_loss(views, w_size=8, generator=gen), views

    def lejepa() -> tuple[torch.Tensor, list[torch.Tensor]]:
        views = [torch.randn(16, 6, requires_grad=True) for _ in range(3)]
        gen = torch.Generator().manual_seed(0)
        loss = SF.lejepa_loss(views[:2], views[2:], num_slices=32, generator=gen)
        return loss + SF.sigreg_loss(views[0], num_slices=32, generator=gen), views

    def dino_sinkhorn() -> tuple[torch.Tensor, list[torch.Tensor]]:
        student = _scores(4)
        teacher = [s.detach() for s in _scores(2)]
        return SF.dino_loss(student, teacher, centering="sinkhorn"), student

    def ibot() -> tuple[torch.Tensor, list[torch.Tensor]]:
        student = torch.randn(3, 5, 12, requires_grad=True)
        teacher = torch.randn(3, 5, 12)
        masks = torch.rand(3, 5) < 0.5
        masks[0, 0] = True
        center = SF.ibot_patch_loss(student, teacher, masks, center=torch.zeros(12))
        sinkhorn = SF.ibot_patch_loss(student, teacher, masks, centering="sinkhorn")
        return center + sinkhorn, [student]

    def ema_update() -> tuple[torch.Tensor, list[torch.Tensor]]:
        online, target = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
        SF.ema_update_(target=target, online=online, momentum=0.5)
        return target.weight.detach().sum(), []

    def resolve_chunk_size() -> tuple[torch.Tensor, list[torch.Tensor]]:
        block = SF.resolve_chunk_size("auto", 2048, 2048, "cpu")
        if block != 512:
            raise AssertionError(f"resolve_chunk_size('auto', 2048, 2048, 'cpu') gave {block}")
        return torch.tensor(float(block)), []

    def select_algorithm() -> tuple[torch.Tensor, list[torch.Tensor]]:
        picked = (SF.select_algorithm(256, 8192), SF.select_algorithm(8192, 2048, symmetric=True))
        if picked != ("gram", "fused"):
            raise AssertionError(f"select_algorithm gave {picked}, expected ('gram', 'fused')")
        return torch.tensor(0.0), []

    def vicreg_terms() -> tuple[torch.Tensor, list[torch.Tensor]]:
        a, b = _pair()
        return SF.vicreg_terms(a, b).loss, [a, b]

    def supcon() -> tuple[torch.Tensor, list[torch.Tensor]]:
        a, b = _pair()
        labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
        loss = SF.supcon_loss([a, b], labels) + SF.supcon_loss([a, b], labels, chunk_size=3)
        return loss + SF.supcon_loss(torch.stack([a, b], dim=1), contrast_mode="one"), [a, b]

    def nnclr() -> tuple[torch.Tensor, list[torch.Tensor]]:
        (z_a, z_b), (p_a, p_b) = _pair(), _pair()
        support = torch.randn(20, 16)
        loss = SF.nnclr_loss(z_a, z_b, p_a, p_b, support)
        return loss + SF.nnclr_loss(z_a, z_b, p_a, p_b, support, chunk_size=3), [p_a, p_b]

    def nearest_neighbours() -> tuple[torch.Tensor, list[torch.Tensor]]:
        support = torch.randn(20, 16)
        rows, index = SF.nearest_neighbours(support[[3, 7]], support, return_indices=True)
        if index.tolist() != [3, 7] or not torch.equal(rows, support[[3, 7]]):
            raise AssertionError(f"nearest_neighbours of support rows 3, 7 gave {index.tolist()}")
        return rows.sum(), []

    def dcl() -> tuple[torch.Tensor, list[torch.Tensor]]:
        a, b = _pair()
        return SF.dcl_loss(a, b) + SF.dcl_loss(a, b, chunk_size=3), [a, b]

    def dclw() -> tuple[torch.Tensor, list[torch.Tensor]]:
        a, b = _pair()
        return SF.dclw_loss(a, b) + SF.dclw_loss(a, b, chunk_size=3), [a, b]

    def uniformity() -> tuple[torch.Tensor, list[torch.Tensor]]:
        a, _ = _pair()
        return SF.uniformity_loss(a) + SF.uniformity_loss(a, chunk_size=3), [a]

    return {
        "barlow_twins_loss": pair_loss(SF.barlow_twins_loss),
        "byol_loss": pair_loss(SF.byol_loss, target_grad=False),
        "dino_loss": dino,
        "dino_loss sinkhorn": dino_sinkhorn,
        "ema_update_": ema_update,
        "ibot_patch_loss": ibot,
        "info_nce": info_nce,
        "koleo_loss": koleo,
        "lejepa_loss": lejepa,
        "mmcr_loss": mmcr,
        "negative_cosine_similarity": pair_loss(SF.negative_cosine_similarity, target_grad=False),
        "nt_xent": pair_loss(SF.nt_xent),
        "resolve_chunk_size": resolve_chunk_size,
        "select_algorithm": select_algorithm,
        "sigreg_loss": lejepa,
        "sinkhorn": sinkhorn,
        "swav_loss": swav,
        "tico_loss": tico,
        "supcon_loss": supcon,
        "vicreg_loss": pair_loss(SF.vicreg_loss),
        "wmse_loss": wmse,
        "vicreg_terms": vicreg_terms,
        "nnclr_loss": nnclr,
        "nearest_neighbours": nearest_neighbours,
        "dcl_loss": dcl,
        "dclw_loss": dclw,
        "alignment_loss": pair_loss(SF.alignment_loss),
        "uniformity_loss": uniformity,
    }


def main(source_dir: Path) -> int:
    import sslosses

    installed_dir = Path(sslosses.__file__).resolve().parent
    errors: list[str] = []
    if installed_dir == source_dir.resolve():
        errors.append(f"sslosses was imported from the source tree {installed_dir}, not the wheel")
    errors += [f"missing from the wheel: {m}" for m in missing_modules(source_dir, installed_dir)]
    for name in sorted(module_names(source_dir)):
        try:
            importlib.import_module(name)
        except Exception as exc:  # report every failing import, not just the first
            errors.append(f"import {name} failed: {type(exc).__name__}: {exc}")

    import sslosses.functional as SF

    calls = smoke_calls()
    uncovered = sorted(set(SF.__all__) - {n.split()[0] for n in calls})
    errors += [f"no smoke call for sslosses.functional.{n} in {__file__}" for n in uncovered]
    # a key is a function's name, optionally followed by the variant it runs
    for name in sorted(n for n in calls if n.split()[0] in SF.__all__):
        try:
            out, inputs = calls[name]()
            if inputs:
                out.backward()
            grads = [t.grad for t in inputs]
            finite = bool(torch.isfinite(out).all()) and all(
                g is not None and bool(torch.isfinite(g).all()) for g in grads
            )
            if not finite:
                errors.append(f"{name}: non-finite value or missing/non-finite gradient")
        except Exception as exc:
            errors.append(f"{name} failed: {type(exc).__name__}: {exc}")

    for line in errors:
        print(f"wheel smoke: {line}", file=sys.stderr)
    if not errors:
        n_modules = len(module_names(source_dir))
        print(
            f"wheel smoke: ok (sslosses {sslosses.__version__} from {installed_dir}, "
            f"torch {torch.__version__}; {n_modules} modules imported, {len(calls)} functions run)"
        )
    return 1 if errors else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} SOURCE_PACKAGE_DIR")
    sys.exit(main(Path(sys.argv[1])))
