"""The walkthrough notebooks run top to bottom (tiny scale, temporary folder) and match their generator.

All notebooks run in ONE kernel, in course order, each after ``%reset -f`` (a clean namespace; only
already-imported modules stay loaded), so TensorFlow is imported once. They share one work folder
the way a user running them in order does: notebook 1 generates and cooks the data, 5 trains the
sweep that 6 and 7 reuse. Each notebook also runs alone (it makes what it needs).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
jupyter_client = pytest.importorskip("jupyter_client")

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]-*.ipynb"))


def _load_builder():
    spec = importlib.util.spec_from_file_location("_nb_build", NOTEBOOKS_DIR / "_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notebooks_are_committed_without_outputs_and_match_the_generator(tmp_path: Path) -> None:
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06", "07"]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has outputs"
        assert "parameters" in nb.cells[1].metadata.get("tags", []), path.name
        assert "scale = param(" in nb.cells[1].source and "work_dir = param(" in nb.cells[1].source
    written = _load_builder().build(tmp_path)
    for fresh in written:
        committed = NOTEBOOKS_DIR / fresh.name
        assert committed.read_text() == fresh.read_text(), f"{fresh.name}: run python notebooks/_build.py"


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory):
    """One Python kernel, started in a temporary folder with tiny-scale notebook parameters."""
    work = tmp_path_factory.mktemp("notebooks")
    env = {
        **os.environ,
        "GTSRB_KIT_NB_WORK_DIR": str(work / "data"),
        "GTSRB_KIT_NB_ROOT": str(work / "data" / "raw"),
        "GTSRB_KIT_NB_SCALE": "0.5",
        "GTSRB_KIT_NB_SYNTH_TRACKS": "2",
        "GTSRB_KIT_NB_EPOCHS": "1",
        "GTSRB_KIT_NB_MODELS": "v1",  # the sweep of notebooks 5-7: two runs, so 7 has a committee
        "GTSRB_KIT_NB_MODES": "RGB,L",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    km = jupyter_client.KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(work), env=env)
    try:
        yield km, work
    finally:
        km.shutdown_kernel(now=True)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, kernel) -> None:
    km, work = kernel
    nb = nbformat.read(path, as_version=4)
    reset = nbformat.v4.new_code_cell(f"%reset -f\nimport os\nos.chdir({json.dumps(str(work))})")
    nb.cells.insert(0, reset)
    client = nbclient.NotebookClient(nb, km=km, timeout=600, kernel_name="python3", allow_errors=False)
    try:
        client.execute()
    finally:
        if client.kc is not None:
            client.kc.stop_channels()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert errors == []
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    if path.name.startswith("05"):
        assert "test accuracy" in text  # the sweep trained (or found done) its runs
    if path.name.startswith("07"):
        assert (work / "data" / "runs" / "gtsrb5" / "report.html").is_file()
        assert re.search(r"Committee of all \d+ finished runs: \d+\.\d\d \(", text)  # evaluated, with its lowest recall
