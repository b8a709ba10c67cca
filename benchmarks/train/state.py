"""Runtime helpers of the reference training: seeding, every RNG's state as plain tensors (so
that a checkpoint loads with ``torch.load(weights_only=True)``), atomic saves, and the autocast
context shared by training and the probes."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA; a disabled context on CPU (float32 there)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every RNG's state as tensors, ints, floats and None only: ``weights_only`` loads it."""
    py_version, py_words, py_gauss = random.getstate()
    np_name, np_words, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    if np_name != "MT19937":
        raise ValueError(f"unexpected NumPy bit generator {np_name!r}")
    state: dict[str, Any] = {
        "python": torch.tensor(py_words, dtype=torch.int64),  # 625 words < 2**32
        "python_version": int(py_version),
        "python_gauss": py_gauss,
        "numpy": torch.from_numpy(np.asarray(np_words, dtype=np.int64)),  # 624 uint32 words
        "numpy_pos": int(np_pos),
        "numpy_gauss": (int(np_has_gauss), float(np_gauss)),
        "torch": torch.get_rng_state(),
        "augment": generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    """Restore :func:`rng_state`'s states (its tensors may have been mapped to an accelerator)."""
    words = tuple(int(w) for w in state["python"].tolist())
    random.setstate((state["python_version"], words, state["python_gauss"]))
    has_gauss, gauss = state["numpy_gauss"]
    np_words = state["numpy"].cpu().numpy().astype(np.uint32)
    np.random.set_state(("MT19937", np_words, state["numpy_pos"], has_gauss, gauss))
    torch.set_rng_state(state["torch"].cpu())
    generator.set_state(state["augment"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_atomic(obj: object, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
