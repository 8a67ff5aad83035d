"""utils/notebook_file.py: the notebook's file read as JSON, its sections and its identity cell."""
import json

import pytest

from utils.notebook_file import (NOTEBOOK, cell_source, fill_identity, read_notebook, section_code_cells,
                                 sectioned_cells)


def markdown(text):
    return {"cell_type": "markdown", "metadata": {}, "source": text}


def code(text, tags=()):
    return {"cell_type": "code", "metadata": {"tags": list(tags)}, "source": text, "outputs": []}


def test_the_shipped_notebook_has_sections_0_to_7_in_order():
    sections = [section for section, _ in sectioned_cells(read_notebook(NOTEBOOK)["cells"])]
    opened = list(dict.fromkeys(sections))
    assert opened[0] == "setup" and opened[1] == "0. SCIPER Number and Name"
    assert [int(s.split(".")[0]) for s in opened[1:]] == list(range(8))
    assert all(section_code_cells(read_notebook(NOTEBOOK))[n] for n in (5, 6)), "Sections 5 and 6 hold code"


def test_a_retyped_heading_still_opens_its_section_and_subheadings_do_not():
    cells = [code("import os"), markdown("## 5) Training\nthe loop"), code("train()"),
             markdown("## Curves"), code(["plot(", ")"]), markdown("#6: Results"), markdown("text")]
    assert [s for s, _ in sectioned_cells(cells)] == ["setup", "5) Training", "5) Training", "5) Training",
                                                      "5) Training", "6: Results", "6: Results"]
    assert {n: [cell_source(c) for c in cs] for n, cs in section_code_cells({"cells": cells}).items()} == {
        5: ["train()", "plot()"], 6: []}


def test_a_file_that_is_not_a_notebook_names_itself(tmp_path):
    (tmp_path / "broken.ipynb").write_text("{not json")
    with pytest.raises(ValueError, match=r"broken.ipynb is not valid JSON"):
        read_notebook(tmp_path / "broken.ipynb")
    (tmp_path / "list.ipynb").write_text(json.dumps({"cells": "none"}))
    with pytest.raises(ValueError, match=r"list.ipynb is JSON but not a notebook"):
        read_notebook(tmp_path / "list.ipynb")


def test_the_identity_cell_is_filled_only_when_it_is_the_one_tagged(tmp_path):
    cells = [code("SCIPER = 0", tags=["identity"]), code("x = 1")]
    fill_identity(cells, "SCIPER = 100000\n")
    assert cell_source(cells[0]) == "SCIPER = 100000\n" and cell_source(cells[1]) == "x = 1"
    with pytest.raises(SystemExit, match=r"nb.ipynb: expected exactly one cell tagged 'identity', found 2"):
        fill_identity(cells + [code("", tags=["identity"])], "", tmp_path / "nb.ipynb")
