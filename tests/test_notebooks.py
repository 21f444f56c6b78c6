"""The notebooks run top to bottom (each asserts its own results), so they never rot."""

from __future__ import annotations

import tempfile
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_three_notebooks() -> None:
    assert [n.name for n in NOTEBOOKS] == [
        "01-quickstart.ipynb",
        "02-scaling-and-recovery.ipynb",
        "03-joins-and-lookups.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the kernel starts its own Ray: a short temp dir of its own (socket paths <= 107 bytes)
    monkeypatch.setenv("RAY_TMPDIR", tempfile.mkdtemp(prefix="grnb", dir="/tmp"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    if path.name.startswith("01"):
        # the plot was drawn
        assert any("image/png" in o.get("data", {}) for o in outputs)
