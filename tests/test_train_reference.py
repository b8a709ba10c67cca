"""The committed digits tables, README's copy of one of them, and what ``make train`` says.

README's digits table and ``benchmarks/results/train_digits.md`` are copies of a committed
``results.json`` (``benchmarks/results/train_digits*.json``, one per torch build, each naming
the software that produced it). These tests fail when README's numbers, its torch version or
its statement of how much the numbers move across torch versions disagree with those files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from benchmarks.train import reference as train_reference
from benchmarks.train.config import LABEL_METHODS

ROOT = Path(__file__).resolve().parents[1]

README = (ROOT / "README.md").read_text()
DIGITS = README[
    README.index("**Digits**") : README.index("Full table: [`benchmarks/results/train_digits.md`")
]


def _table_cells(section: str) -> list[list[str]]:
    """The cells of every markdown table line of ``section``, stripped."""
    return [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in section.splitlines()
        if line.lstrip().startswith("|")
    ]


def _readme_rows() -> dict[str, tuple[float, ...]]:
    rows = {}
    for cells in _table_cells(DIGITS):
        cells = [c.strip("*") for c in cells]
        if len(cells) == 5 and re.fullmatch(r"\d+\.\d\d", cells[1]):
            rows[cells[0]] = tuple(float(c) for c in cells[1:4])
    return rows


def _summary(torch_version: str, knn200: float, raw: float = 95.0) -> dict[str, Any]:
    run = {
        "title": "SimCLR",
        "seed": 0,
        "final": {"knn200": knn200, "knn20": 90.0, "linear": 91.0},
        "untrained": {"knn200": 60.0, "knn20": 70.0, "linear": 80.0},
    }
    return {
        "raw_pixels": {"knn200": raw, "knn20": 96.0, "linear": 97.0},
        "software": {"torch": torch_version},
        "runs": [run],
    }


def test_readme_digits_table_is_the_committed_table_of_the_torch_it_names() -> None:
    named = re.search(r"made with torch (\S+?)[ ,)]", DIGITS)
    assert named, "README's digits section must name the torch version of its table"
    tables = train_reference.committed_tables()
    same = [t for t in tables if t["software"]["torch"] == named.group(1)]
    assert len(same) == 1, f"no single committed table for torch {named.group(1)}"
    expected = {
        row: tuple(round(v, 2) for v in values)
        for row, values in train_reference.table_rows(same[0]).items()
    }
    assert _readme_rows() == expected


FASHION = README[README.index("**Fashion-MNIST**") : README.index("**Digits**")]
FASHION_JSON = train_reference.RESULTS / "train_fashion_mnist.json"


def test_readme_fashion_table_is_seed_0_of_the_committed_results() -> None:
    """Every seed-0 run of ``train_fashion_mnist.json`` is a row of README's table with its
    probes, steps and CPU minutes, in bold exactly where it beats raw pixels; and README's
    count of the self-supervised methods above the pixels is the JSON's."""
    results = json.loads(FASHION_JSON.read_text())
    raw = results["raw_pixels"]
    expected: dict[str, tuple[str, ...]] = {
        "raw pixels": (*(f"{raw[p]:.2f}" for p in train_reference.PROBES), "-", "-"),
    }
    above = 0
    self_supervised = 0
    for run in results["runs"]:
        if run["seed"] != 0:
            continue
        final = run["final"]
        beats = {p: round(final[p], 2) > round(raw[p], 2) for p in train_reference.PROBES}
        cells = [
            f"**{final[p]:.2f}**" if beats[p] else f"{final[p]:.2f}" for p in train_reference.PROBES
        ]
        expected[run["title"]] = (*cells, str(run["steps"]), f"{run['cpu_seconds'] / 60:.1f}")
        if run["method"] not in LABEL_METHODS:
            self_supervised += 1
            above += beats["linear"]
    rows = {
        cells[0]: tuple(cells[1:])
        for cells in _table_cells(FASHION)
        if len(cells) == 6 and cells[0] in expected
    }
    assert rows == expected
    sentence = f"{above} of the {self_supervised} self-supervised methods beat raw pixels in seed 0"
    assert sentence in " ".join(FASHION.split())


def test_readme_states_how_far_the_committed_tables_lie_apart() -> None:
    tables = train_reference.committed_tables()
    assert len(tables) >= 2, "commit the digits table of at least two torch builds"
    for table in tables:  # README names every committed build and its file
        assert f"torch {table['software']['torch']}" in DIGITS, table["path"]
        assert table["path"] in DIGITS
    stated = re.search(r"by up to (\d+\.\d\d) points", DIGITS)
    assert stated, "README's digits section must say how much the numbers move"
    assert float(stated.group(1)) == pytest.approx(train_reference.spread(tables), abs=1e-9)


def test_train_digits_md_copies_the_first_committed_table() -> None:
    text = (ROOT / "benchmarks" / "results" / "train_digits.md").read_text()
    reference = next(
        t for t in train_reference.committed_tables() if f"torch {t['software']['torch']}" in text
    )
    assert f"Software: {train_reference.describe(reference['software'])}." in text
    for row, values in train_reference.table_rows(reference).items():
        cells = " | ".join(f"{v:.2f}" for v in values)
        assert re.search(rf"\| {re.escape(row)} \|[^\n]*\| {cells} \|", text), row


def test_compare_with_committed_says_match_differ_or_unknown(tmp_path: Path) -> None:
    (tmp_path / "train_digits_a.json").write_text(json.dumps(_summary("2.13.0+cpu", 90.0)))
    (tmp_path / "train_digits_b.json").write_text(json.dumps(_summary("2.14.1", 91.25)))
    same = train_reference.compare_with_committed(_summary("2.13.0+cpu", 90.0), tmp_path)
    assert same == (
        "This table matches benchmarks/results/train_digits_a.json (made with the same torch, "
        "2.13.0+cpu) exactly."
    )
    moved = train_reference.compare_with_committed(_summary("2.14.1", 91.0), tmp_path)
    assert "differs from benchmarks/results/train_digits_b.json" in moved
    assert "by up to 0.25 points" in moved
    other_cpu = _summary("2.13.0+cpu", 90.5)
    other_cpu["software"]["cpu"] = "AMD EPYC"
    (tmp_path / "train_digits_a.json").write_text(
        json.dumps(
            {
                **_summary("2.13.0+cpu", 90.0),
                "software": {"torch": "2.13.0+cpu", "cpu": "Intel Xeon"},
            }
        )
    )
    assert train_reference.compare_with_committed(other_cpu, tmp_path).endswith(
        "same torch, but not the same machine or libraries (cpu Intel Xeon there, AMD EPYC "
        "here); another CPU's kernels round differently, and training carries the difference."
    )
    extra = _summary("2.13.0+cpu", 90.0)
    extra["runs"].append({**extra["runs"][0], "title": "DINO"})
    assert train_reference.compare_with_committed(extra, tmp_path).endswith(
        "do not have the same rows (DINO in one only); the rows they share differ by up to "
        "0.00 points."
    )
    unknown = train_reference.compare_with_committed(_summary("2.15.0", 92.0), tmp_path)
    assert unknown.startswith("No committed digits table was made with torch 2.15.0.")
    assert "differ from each other by up to 1.25 points" in unknown
    assert unknown.endswith("this table differs from the first by up to 2.00.")
    assert train_reference.compare_with_committed(_summary("x", 1.0), tmp_path / "none") == (
        "No committed digits table to compare with."
    )


def test_table_rows_and_largest_difference() -> None:
    rows = train_reference.table_rows(_summary("t", 90.004, raw=95.0))
    assert rows == {
        "raw pixels": (95.0, 96.0, 97.0),
        "untrained encoder": (60.0, 70.0, 80.0),
        "SimCLR": (90.004, 90.0, 91.0),
    }
    other = train_reference.table_rows(_summary("t", 89.5, raw=95.5))
    assert train_reference.largest_difference(rows, other) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="share no row"):
        train_reference.largest_difference(rows, {"other": (1.0, 2.0, 3.0)})


def test_software_versions_name_the_torch_build() -> None:
    versions = train_reference.software_versions()
    import torch

    assert versions["torch"] == torch.__version__
    assert versions["torch build"] in {"CPU only", f"CUDA {torch.version.cuda}"}
    assert "torch " + torch.__version__ in train_reference.describe(versions)
