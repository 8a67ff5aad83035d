"""The course notebook's file read as plain JSON, without Jupyter's packages (the GPU benchmark runs where they may
be missing): its cells and their sources, its numbered sections ("# 5. Training Loop"), and Section 0's identity
cell. Section 7's checks (utils/submission), the headless runs (headless.py) and benchmarks/notebook_gpu.py read
the notebook through these.

Tests: tests/test_notebook_file.py.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parents[1] / "CS461_Assignment1.ipynb"
# A section's heading, the first line of a markdown cell: "# 5. Training Loop", or "## 5)" and "#5:" as a student
# may retype it.
SECTION_HEADING = re.compile(r"^#{1,2}\s*(\d+)\s*[.:)]")
IDENTITY_TAG = "identity"      # the tag of Section 0's cell that assigns SCIPER, LAST_NAME and FIRST_NAME


def read_notebook(path: str | os.PathLike) -> dict:
    """The notebook as a dict; ValueError when it is not a notebook (invalid JSON, no list of cells)."""
    path = Path(path)
    try:
        notebook = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from error
    if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list):
        raise ValueError(f"{path} is JSON but not a notebook: expected an object with a list of \"cells\"")
    return notebook


def cell_source(cell: dict) -> str:
    """A cell's source as one string (the file may store it as a list of lines)."""
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def sectioned_cells(cells: list) -> list[tuple[str, dict]]:
    """(section, cell) for every cell, in order. A markdown cell whose first line is a SECTION_HEADING opens a
    section, named by that line ("# 5. Training Loop" -> "5. Training Loop"); cells before the first are in
    "setup"."""
    section, out = "setup", []
    for cell in cells:
        if not isinstance(cell, dict):
            continue
        first = (cell_source(cell).lstrip().splitlines() or [""])[0]
        if cell.get("cell_type") == "markdown" and SECTION_HEADING.match(first):
            section = first.lstrip("#").strip()
        out.append((section, cell))
    return out


def section_code_cells(notebook: dict) -> dict[int, list[dict]]:
    """{section number: its code cells} (a section without code cells maps to [])."""
    sections: dict[int, list[dict]] = {}
    for section, cell in sectioned_cells(notebook["cells"]):
        number = re.match(r"\d+", section)
        if number:
            code = sections.setdefault(int(number.group()), [])
            if cell.get("cell_type") == "code":
                code.append(cell)
    return sections


def fill_identity(cells: list, source: str, path: str | os.PathLike = NOTEBOOK) -> None:
    """Replace the source of the one cell tagged IDENTITY_TAG with `source` (a headless run's identity, so that
    Section 7 can hand in). SystemExit naming `path` when there is not exactly one."""
    tagged = [c for c in cells if IDENTITY_TAG in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise SystemExit(f"{path}: expected exactly one cell tagged {IDENTITY_TAG!r}, found {len(tagged)}")
    tagged[0]["source"] = source
