"""The notebook's Section 7: hand in this run's four files and say, in a few lines, what eval.py found.

    hand_in(submission_dir, weights=..., metrics=..., notebook=..., output_dir=..., data_dir=..., identity=...)

1. Refuses, copying nothing, while Section 0's identity is a placeholder, or while the notebook saved on disk
   holds no outputs of this run (Sections 5 and 6 empty, or its outputs never name the weights' run
   fingerprint): the file handed in is the saved one, so the student saves and runs the cell again.
2. Copies the four files (assemble_submission), the report being the student's `my_report.md` when it exists.
3. Runs `python eval.py` on the folder, as the student would from a terminal: its whole output goes to
   `eval_log.txt`, its result to `eval_result.json`.
4. Writes `report_draft.md` from eval.py's numbers and the training metrics (report_draft.py). The first time,
   `my_report.md` is created from it (never overwritten afterwards) and handed in as report.md, and eval.py
   --quick checks the folder again with it (`eval_final.json`: the checks of what is handed in now).
5. Prints the verdict: the summary, every FAIL and WARN line, the four accuracies, where the log is.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from utils.checkpoint import weights_metadata
from utils.submission.assemble import assemble_submission
from utils.submission.course import (DEMO_ENV, DEMO_FLAG, FILL_IN_MARKER, PROJECT_ROOT, REPORT_FILE, SubmissionError,
                                     expand_path)
from utils.submission.notebook_checks import (EXECUTED_FIX, IDENTITY_FILL_IN, identity_problems, notebook_identity,
                                              read_notebook, shows_run, unexecuted_sections)
from utils.submission.report import format_percent
from utils.submission.report_draft import drafted_for, load_json, write_report_draft

MY_REPORT = "my_report.md"          # the student's report, in the output folder: created once, never overwritten
DRAFT = "report_draft.md"           # the kit's draft from the latest run, rewritten every time
PLACEHOLDER_REPORT = f"""# Report

{FILL_IN_MARKER}: Section 7 writes a draft from your run once eval.py has measured it>>
"""


@dataclass
class HandIn:
    copied: bool                     # the four files are in the submission folder
    ok: bool = False                 # eval.py found no failure
    lines: list[str] = field(default_factory=list)   # the verdict, as printed
    result: dict | None = None       # eval.py's result (eval_result.json): the accuracies
    final: dict | None = None        # the checks of what is handed in now (eval_final.json)


def saved_notebook_problem(notebook: Path, fingerprint: str | None) -> str | None:
    """Why the notebook saved at `notebook` is not this run's executed notebook (None when it is)."""
    try:
        saved = read_notebook(notebook)
    except (ValueError, OSError) as error:
        return f"the notebook file cannot be read ({error})"
    missing = unexecuted_sections(saved)
    if missing:
        return f"the notebook saved at {notebook} holds code cells that never ran, in {' and '.join(missing)}"
    if fingerprint and not shows_run(saved, fingerprint):
        return (f"the notebook saved at {notebook} does not show this run (its outputs never name run "
                f"{fingerprint}): it was saved before this run's training")
    problems = identity_problems(notebook_identity(notebook))
    if problems:
        return f"the notebook saved at {notebook} does not name its author: {'; '.join(problems)}"
    return None


def run_eval(submission: Path, data_dir, json_path: Path, log: Path, *, quick: bool = False, fast: bool = False,
             demo: bool = False) -> dict:
    """`python eval.py` on the folder; its output appended to `log`; returns its JSON result (with its exit status)."""
    submission, json_path = Path(submission).resolve(), Path(json_path).resolve()   # eval.py runs in the kit's folder
    data_dir = Path(data_dir).resolve() if data_dir else None
    command = [sys.executable, str(PROJECT_ROOT / "eval.py"), "-i", str(submission), "--json", str(json_path),
               "--no-progress"] + (["-d", str(data_dir)] if data_dir else []) + (["--quick"] if quick else []) \
        + (["--fast"] if fast else []) + ([DEMO_FLAG] if demo else [])
    json_path.unlink(missing_ok=True)
    done = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_ROOT)
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(command)}\n{done.stdout}{done.stderr}\n(exit status {done.returncode})\n\n")
    if not json_path.is_file():
        raise SubmissionError(f"eval.py stopped without a result (exit status {done.returncode}); its output is "
                              f"in {log}:\n{(done.stdout + done.stderr)[-2000:]}")
    return {**load_json(json_path), "exit_status": done.returncode}


def hand_in(submission_dir, *, weights, metrics, notebook, output_dir, data_dir, identity: dict,
            fast: bool = False, demo: bool = False) -> HandIn:
    """Section 7, steps 1-5 of the module's docstring. Returns what happened; prints the verdict."""
    out = Path(output_dir)
    submission = expand_path(submission_dir)
    problems = identity_problems(identity)
    if problems:
        return _say(HandIn(False, lines=["NOT COPIED: fill in Section 0 first, save the notebook, then run this "
                                         "cell again:", *(f"  - {p}" for p in problems),
                                         f"  ({IDENTITY_FILL_IN})"]))
    fingerprint = weights_metadata(weights).get("fingerprint")
    stale = saved_notebook_problem(Path(notebook), fingerprint)
    if stale:
        return _say(HandIn(False, lines=[f"NOT COPIED: {stale}. The notebook handed in is the file saved on disk.",
                                         f"  {EXECUTED_FIX} (Jupyter also saves by itself every few minutes)."]))

    mine, draft, log = out / MY_REPORT, out / DRAFT, out / "eval_log.txt"
    if not mine.is_file() and not draft.is_file():
        draft.write_text(PLACEHOLDER_REPORT, encoding="utf-8")
    handed_report = mine if mine.is_file() else draft
    assemble_submission(submission, weights=weights, notebook=notebook, report=handed_report)
    log.write_text("")
    result = run_eval(submission, data_dir, out / "eval_result.json", log, fast=fast, demo=demo)
    final, notes = result, []
    if result.get("accuracies_percent"):
        write_report_draft(draft, result, load_json(metrics))
        if not mine.is_file():
            mine.write_text(draft.read_text(encoding="utf-8"), encoding="utf-8")
            notes.append(f"Wrote {mine}, a report draft from this run's numbers: write your discussion in it "
                         f"(the places marked {FILL_IN_MARKER}: ...>>), save it, and run this cell again.")
        elif fingerprint and drafted_for(mine) not in (None, fingerprint):
            notes.append(f"Note: {mine} was drafted for run {drafted_for(mine)}, not this run ({fingerprint}): "
                         f"update its numbers from {draft}.")
        if handed_report != mine or (submission / REPORT_FILE).read_text(encoding="utf-8") != mine.read_text(
                encoding="utf-8"):
            (submission / REPORT_FILE).write_text(mine.read_text(encoding="utf-8"), encoding="utf-8")
            final = run_eval(submission, data_dir, out / "eval_final.json", log, quick=True, demo=demo)
    if final is result:
        (out / "eval_final.json").write_text(json.dumps(result, indent=2) + "\n")
    return _say(HandIn(True, ok=result["ok"] and final["ok"], result=result, final=final,
                       lines=verdict_lines(submission, mine, result, final, log) + notes))


def verdict_lines(submission: Path, report: Path, result: dict, final: dict, log: Path) -> list[str]:
    """The short verdict: what was handed in, eval.py's summary, each FAIL and WARN line (of the folder as handed
    in, and those only the full run makes, like the probes' warnings), the four accuracies."""
    lines = [f"Handed in to {submission}: models.py, final_model.safetensors, the saved notebook, and "
             f"{report.name if report.is_file() else 'a placeholder'} as report.md.",
             f"eval.py: {final['summary']}" + ("" if final is result else
                                                f" (with the probes, before the report was handed in: "
                                                f"{result['summary']})")]
    names = {check["name"] for check in final["checks"]}
    for check in final["checks"] + [c for c in result["checks"] if c["name"] not in names]:
        if check["status"] != "pass":
            fix = f" — {check['fix']}" if check["fix"] else ""
            lines.append(f"  {check['status'].upper()} {check['name']}: {check['message']}{fix}")
    acc = result.get("accuracies_percent") or {}
    if acc:
        lines.append(f"Accuracies (the grader's protocol): ID k-NN {format_percent(acc['id_knn'])}, linear "
                     f"{format_percent(acc['id_linear'])}; OOD k-NN {format_percent(acc['ood_knn'])}, linear "
                     f"{format_percent(acc['ood_linear'])}")
    else:
        lines.append(f"Accuracies not measured: {result.get('probes_skipped') or 'see the log'}")
    lines.append(f"Full log: {log}")
    return lines


def _say(handin: HandIn) -> HandIn:
    print("\n".join(handin.lines))
    return handin


def demo_run() -> bool:
    """True when `make demo` runs the notebook (it sets $CS461_DEMO=1): eval.py then accepts generated data."""
    return os.environ.get(DEMO_ENV) == "1"
