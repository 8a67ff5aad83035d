"""Headless execution (utils/headless.py): a widget drawing into an ipywidgets.Output does not stall the run,
and a cell past its time limit stops it with an error naming the cell. Each test starts a small kernel."""
import time

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from utils.headless import CellTimeout, execute_notebook

# The neighbour explorer's widget, as the notebook's Section 6 shows it (it draws its figure into an
# ipywidgets.Output). nbclient's Output-widget mimic used to send the kernel a comm message while it waited for
# the cell's reply, and such a cell then often waited for its whole time limit after the kernel was idle.
EXPLORER_CELL = """explorer.neighbour_explorer(rng.integers(0, 255, (50, 64, 64, 3), dtype=np.uint8),
                            rng.normal(size=(50, 8)), rng.integers(0, 5, 50), interactive=True)"""


def test_explorer_widget_cells_do_not_wait_for_the_cell_timeout(tmp_path):
    pytest.importorskip("ipywidgets")
    setup = "%matplotlib inline\nimport numpy as np\nfrom utils import explorer\nrng = np.random.default_rng(0)"
    nb = new_notebook(cells=[new_code_cell(setup)] + [new_code_cell(EXPLORER_CELL) for _ in range(6)])
    limit = 15
    waited = execute_notebook(nb, timeout=limit, save_to=tmp_path / "widgets.ipynb")
    seconds = [waited[index] for index in range(1, len(nb.cells))]
    assert max(seconds) < limit / 2, f"the widget cells took {seconds} s each (limit {limit} s)"
    # the figure is recorded in the Output widget's state, as a front-end would show it
    view = nb.cells[1].outputs[-1]["data"]["application/vnd.jupyter.widget-view+json"]
    assert view["model_id"]


def test_a_cell_past_its_time_limit_stops_the_run_naming_the_cell():
    nb = new_notebook(cells=[new_code_cell("x = 1"), new_code_cell("import time\ntime.sleep(60)  # stuck"),
                             new_code_cell("print('never')")])
    start = time.time()
    with pytest.raises(CellTimeout, match=r'cell 1 \("import time"\) ran longer than its limit of 3 s') as raised:
        execute_notebook(nb, timeout=3)
    assert time.time() - start < 45
    assert "CS461_CELL_TIMEOUT" in str(raised.value)
    assert not nb.cells[2].get("outputs")
