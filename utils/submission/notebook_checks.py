"""The notebook: valid JSON, executed, by the weights' run, its author's SCIPER and names filled in (read without
running it).

Tests: tests/test_eval.py, tests/test_handin.py.
"""
from __future__ import annotations

import ast
import os
import re
from pathlib import Path

from utils.notebook_file import cell_source, read_notebook, section_code_cells
from utils.submission.course import IDENTITY_NAMES, Report


class NotALiteral(str):
    """An identity assigned by an expression (e.g. `input()`) rather than a value; holds its source text."""


def _without_ipython_syntax(source: str) -> str:
    """Lines of IPython magics and shell escapes (%, !) blanked so that ast can parse the rest; the line
    numbers stay the same."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def _literal(node: ast.AST):
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return NotALiteral(ast.unparse(node))


def _identity_assignments(tree: ast.AST) -> list[tuple[int, str, object]]:
    """(line, name, value) for every assignment to SCIPER / LAST_NAME / FIRST_NAME, including
    `SCIPER: int = ...` and `LAST_NAME, FIRST_NAME = "Doe", "Jane"`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name) and target.id in IDENTITY_NAMES:
                found.append((node.lineno, target.id, _literal(value)))
            elif (isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple)
                  and len(target.elts) == len(value.elts)):
                found += [(node.lineno, t.id, _literal(v)) for t, v in zip(target.elts, value.elts)
                          if isinstance(t, ast.Name) and t.id in IDENTITY_NAMES]
    return sorted(found, key=lambda item: item[0])


_IDENTITY_LINE = re.compile(r"^\s*(SCIPER|LAST_NAME|FIRST_NAME)\s*(?::[^=]*)?=\s*(.+?)\s*$", re.MULTILINE)


def _identity_by_regex(source: str) -> list[tuple[int, str, object]]:
    """Fallback for a cell ast cannot parse: `NAME = value` lines, values read as Python literals."""
    found = []
    for match in _IDENTITY_LINE.finditer(source):
        line = source.count("\n", 0, match.start()) + 1
        text = match.group(2)
        value = NotALiteral(text)
        for candidate in (text, text.split("#")[0].strip()):   # with and without a trailing comment
            try:
                value = ast.literal_eval(candidate)
                break
            except (ValueError, SyntaxError):
                continue
        found.append((line, match.group(1), value))
    return found


def notebook_identity(path: str | os.PathLike) -> dict:
    """{"SCIPER": ..., "LAST_NAME": ..., "FIRST_NAME": ...} as assigned in the notebook's code cells (the
    last assignment wins, as when the notebook runs top to bottom). A name never assigned is absent; a value
    that is not a plain literal is a NotALiteral holding its source. ValueError if the file is no notebook."""
    identity = {}
    for cell in read_notebook(path)["cells"]:
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell_source(cell)
        if not any(name in source for name in IDENTITY_NAMES):
            continue
        try:
            assignments = _identity_assignments(ast.parse(_without_ipython_syntax(source)))
        except SyntaxError:
            assignments = _identity_by_regex(source)
        identity.update({name: value for _, name, value in assignments})
    return identity


_PLACEHOLDER = re.compile(
    r"^(|\.\.\.|…|x+|todo|tbd|tbc|none|null|nan|n/?a|your\b.*|.*\byour name\b.*|first[ _]?name|last[ _]?name|"
    r"name|surname|family name|given name|prénom|nom|sciper|<.*>|\[.*\]|\{.*\}|_+|-+|\?+|\*+|0+)$", re.IGNORECASE)


_MISSING = object()
IDENTITY_FILL_IN = ("fill in section 0 \"SCIPER Number and Name\" of the notebook (SCIPER = 123456, "
                    "LAST_NAME = \"...\", FIRST_NAME = \"...\")")


def identity_problems(identity: dict) -> list[str]:
    """What is wrong with the identity found by notebook_identity, one sentence per problem ([] if fine)."""
    problems = []
    sciper = identity.get("SCIPER", _MISSING)
    if sciper is _MISSING:
        problems.append("SCIPER is not assigned anywhere (expected a line `SCIPER = 123456` with your number)")
    elif isinstance(sciper, NotALiteral):
        problems.append(f"SCIPER is set by the expression `{sciper}`; expected the number itself")
    elif isinstance(sciper, bool) or not isinstance(sciper, (int, str)) or sciper is None:
        problems.append(f"SCIPER is {sciper!r}; expected your 6-digit SCIPER number as an integer")
    elif isinstance(sciper, str):
        if re.fullmatch(r"\d{6}", sciper.strip()):
            problems.append(f"SCIPER is the string {sciper!r}; expected an integer: SCIPER = {sciper.strip()}")
        else:
            problems.append(f"SCIPER is {sciper!r} (a placeholder or not a number); expected your 6-digit "
                            f"SCIPER number as an integer")
    elif not 100000 <= sciper <= 999999:
        what = "a placeholder" if sciper == 0 else f"{len(str(abs(sciper)))} digits"
        problems.append(f"SCIPER is {sciper} ({what}); expected your 6-digit SCIPER number")
    for name in ("LAST_NAME", "FIRST_NAME"):
        value = identity.get(name, _MISSING)
        if value is _MISSING:
            problems.append(f"{name} is not assigned anywhere (expected a line `{name} = \"...\"`)")
        elif isinstance(value, NotALiteral):
            problems.append(f"{name} is set by the expression `{value}`; expected the name itself in quotes")
        elif not isinstance(value, str):
            problems.append(f"{name} is {value!r}; expected your name as a string")
        elif _PLACEHOLDER.match(value.strip()) or not re.search(r"[^\W\d_]", value):
            problems.append(f"{name} is {value!r}, a placeholder; expected your {name.lower().replace('_', ' ')}")
    return problems


IDENTITY_FIX = (IDENTITY_FILL_IN + ", save it, and copy it into the submission folder again")


# The sections whose outputs show that the notebook ran (the course's numbering): without outputs there, the
# file is the notebook as handed out, or a copy saved before Run All.
RUN_SECTIONS = {5: "Section 5 (training", 6: "Section 6 (results"}     # closed by unexecuted_sections


def outputs_text(cells: list[dict]) -> str:
    """Everything the cells printed or displayed as text (streams, text/plain results, errors)."""
    parts = []
    for cell in cells:
        for output in cell.get("outputs") or []:
            text = output.get("text", "")
            parts.append("".join(text) if isinstance(text, list) else str(text))
            plain = output.get("data", {}).get("text/plain", "")
            parts.append("".join(plain) if isinstance(plain, list) else str(plain))
            parts.append(output.get("evalue", ""))
    return "\n".join(parts)


def unexecuted_sections(notebook: dict) -> list[str] | None:
    """Each run section (RUN_SECTIONS) with a code cell that never ran (no outputs, no execution count), as
    "Section 6 (results: 3 of 12 code cells)": a notebook saved before Run All, or in the middle of it. Empty
    cells do not count. None when the sections' headings are not found."""
    sections = section_code_cells(notebook)
    if not all(number in sections for number in RUN_SECTIONS):
        return None
    missing = []
    for number, name in RUN_SECTIONS.items():
        cells = [c for c in sections[number] if cell_source(c).strip()]
        unrun = [c for c in cells if not (c.get("outputs") or c.get("execution_count"))]
        if unrun:
            missing.append(f"{name}: {len(unrun)} of {len(cells)} code cells)")
    return missing


def shows_run(notebook: dict, fingerprint: str) -> bool:
    """True when the notebook's outputs name the run's id, its fingerprint (the run prints it when it starts,
    resumes and exports)."""
    cells = [c for c in notebook["cells"] if isinstance(c, dict) and c.get("cell_type") == "code"]
    return fingerprint in outputs_text(cells)


EXECUTED_FIX = ("Run All, save the notebook (Ctrl+S), then run Section 7 again: it copies the notebook as saved "
                "on disk")


def check_notebook(report: Report, path: Path, fingerprint: str | None = None) -> None:
    """Valid, executed (outputs in Sections 5 and 6), by the run whose fingerprint the weights record (a WARN
    otherwise), with its author's identity filled in."""
    try:
        notebook = read_notebook(path)
    except (ValueError, OSError) as error:
        report.failed("notebook is valid", str(error), "re-save the notebook from Jupyter (File > Save) and copy "
                      "it again; do not edit the .ipynb file by hand")
        return
    code_cells = [c for c in notebook["cells"] if isinstance(c, dict) and c.get("cell_type") == "code"]
    report.passed("notebook is valid", f"{len(notebook['cells'])} cells, {len(code_cells)} code cells")
    check_executed(report, notebook, path, code_cells)
    if fingerprint:
        if shows_run(notebook, fingerprint):
            report.passed("notebook shows the weights' run", f"run id {fingerprint} in its outputs")
        else:
            report.warned("notebook shows the weights' run", f"the weights were made by run {fingerprint}, which "
                          f"{path.name}'s outputs never name: the notebook handed in is not the one that trained "
                          f"them", "hand in the notebook of the run that exported the weights: " + EXECUTED_FIX)
    identity = notebook_identity(path)
    problems = identity_problems(identity)
    if problems:
        report.failed("notebook identity", "; ".join(problems) + ". A missing identity means a grade of 0",
                      IDENTITY_FIX)
    else:
        report.passed("notebook identity", f"SCIPER {identity['SCIPER']}, {identity['FIRST_NAME']} "
                      f"{identity['LAST_NAME']}")


def check_executed(report: Report, notebook: dict, path: Path, code_cells: list[dict]) -> None:
    name = "notebook executed"
    missing = unexecuted_sections(notebook)
    if missing is None:        # the headings were renamed: any outputs at all
        if any(c.get("outputs") for c in code_cells):
            report.warned(name, f"{path.name} has outputs, but its Section 5 and 6 headings (\"# 5. ...\", "
                          f"\"# 6. ...\") were not found, so where it ran was not checked",
                          "keep the course's section headings")
        else:
            report.failed(name, f"no code cell of {path.name} has outputs; the course asks for the executed "
                          f"notebook", EXECUTED_FIX)
    elif missing:
        report.failed(name, f"{path.name} holds code cells that never ran, in {' and '.join(missing)}: this is "
                      f"the notebook as handed out, or saved before Run All finished; the course grades the executed "
                      f"notebook", EXECUTED_FIX)
    else:
        report.passed(name, "every code cell of Sections 5 (training) and 6 (results) ran")
