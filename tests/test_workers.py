"""The process pool of cook and stats: workers start without the caller's main script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import tempfile
from gtsrb_kit.cook import cook_dataset
print("script body ran")
with tempfile.TemporaryDirectory() as d:
    r = cook_dataset({root!r}, d, sizes=(16,), modes=("L",), workers=2)
    print("cooked", r[0].path.name)
"""


@pytest.mark.parametrize("how", ["file-without-main-guard", "stdin"])
def test_workers_do_not_rerun_the_callers_script(synth_root: Path, tmp_path: Path, how: str) -> None:
    script = SCRIPT.format(root=str(synth_root))
    if how == "stdin":
        run = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, timeout=120)
    else:
        (tmp_path / "job.py").write_text(script)
        run = subprocess.run([sys.executable, str(tmp_path / "job.py")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["script body ran", "cooked set-16x16-L.h5"]


def test_workers_start_from_a_notebook_after_reset(synth_root: Path) -> None:
    """After ``%reset`` a kernel's ``__main__`` has no ``__spec__``, which multiprocessing reads."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    body = SCRIPT.format(root=str(synth_root)).replace('print("script body ran")\n', "")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%reset -f"), nbformat.v4.new_code_cell(body)]
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=120).execute()
    assert nb.cells[1].outputs[-1]["text"].strip() == "cooked set-16x16-L.h5"
