"""The notebook's Section 7: hand in this run's four files, check them as the grader will, and end the handed-in
notebook on that verdict.

    hand_in(submission_dir, weights=..., metrics=..., notebook=..., output_dir=..., data_dir=...)

1. Refuses, copying nothing, while the notebook saved on disk is not this run's executed notebook (code cells of
   Sections 5 and 6 that never ran, or outputs that never name the weights' run), or does not name its author
   (assemble_submission): the file handed in is the saved one.
2. Copies the four files (assemble_submission); the report is the student's `my_report.md` when it exists.
3. Runs `python eval.py` on the folder once, as the student would from a terminal: its whole output goes to
   `eval_log.txt`, its result to `eval_result.json`.
4. Writes `report_draft.md` from eval.py's numbers and the training metrics (draft_text). The first time,
   `my_report.md` is created from it (never overwritten afterwards) and handed in as report.md, whose checks are
   then made again here (check_report): `eval_final.json` holds the checks of what is handed in now.
5. Prints the verdict, and writes it into the handed-in notebook as the output of the cell that called hand_in:
   the copy ends on the verdict of the hand-in that made it, whatever that cell held when the notebook was saved
   (a refusal during Run All, or an older verdict).

Tests: tests/test_handin.py; assembling in tests/test_eval.py; the notebook's own Section 7 in
tests/test_notebook_hub.py.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from utils.checkpoint import atomic_write, weights_metadata
from utils.data import DATA_ORIGINS
from utils.submission.check import check_report, wc_word_count
from utils.submission.course import (ARCH_LINE, COURSE_BASELINES, DEMO_ENV, DEMO_FLAG, DRAFT_PLACES, FILL_IN_MARKER,
                                     MODELS_FILE, NOTEBOOK_FILE, PROJECT_ROOT, REPORT_FILE, SUBMISSION_FILES,
                                     WEIGHTS_FILE, Report, SubmissionError, expand_path, format_percent, summary)
from utils.notebook_file import cell_source, read_notebook
from utils.probes import PROBE_LABELS
from utils.submission.notebook_checks import (EXECUTED_FIX, IDENTITY_FILL_IN, identity_problems, notebook_identity,
                                              shows_run, unexecuted_sections)

MY_REPORT = "my_report.md"          # the student's report, in the output folder: created once, never overwritten
DRAFT = "report_draft.md"           # the kit's draft from the latest run, rewritten every time
EVAL_LOG = "eval_log.txt"           # everything eval.py printed
EVAL_RESULT = "eval_result.json"    # eval.py's result on the folder as assembled
EVAL_FINAL = "eval_final.json"      # the checks of what is handed in (my_report.md as report.md)
DRAFT_MAX_WORDS = 450               # by `wc -w`: the student has room to write
PLACEHOLDER_REPORT = f"""# Report

{FILL_IN_MARKER}: Section 7 writes a draft from your run once eval.py has measured it>>
"""


@dataclass
class HandIn:
    copied: bool                     # the four files are in the submission folder
    ok: bool = False                 # eval.py found no failure in what is handed in
    lines: list[str] = field(default_factory=list)   # the verdict, as printed
    result: dict | None = None       # eval.py's result (eval_result.json): the accuracies
    final: dict | None = None        # the checks of what is handed in now (eval_final.json)


def hand_in(submission_dir, *, weights, metrics, notebook, output_dir, data_dir, fast: bool = False,
            demo: bool = False) -> HandIn:
    """Section 7, steps 1-5 of the module's docstring. Returns what happened; prints the verdict."""
    out = Path(output_dir)
    submission = expand_path(submission_dir)
    stale = saved_notebook_problem(Path(notebook), weights_metadata(weights).get("fingerprint"))
    if stale:
        return _say(HandIn(False, lines=[f"NOT COPIED: {stale}. The notebook handed in is the file saved on disk.",
                                         f"  {EXECUTED_FIX} (Jupyter also saves by itself every few minutes)."]))
    mine, draft, log = out / MY_REPORT, out / DRAFT, out / EVAL_LOG
    if not mine.is_file() and not draft.is_file():
        draft.write_text(PLACEHOLDER_REPORT, encoding="utf-8")
    assembled = io.StringIO()          # what assembling says belongs to the verdict written into the notebook
    try:
        with contextlib.redirect_stdout(assembled):
            assemble_submission(submission, weights=weights, notebook=notebook,
                                report=mine if mine.is_file() else draft)
    except SubmissionError as error:
        return _say(HandIn(False, lines=[f"NOT COPIED: {error}"]))
    log.write_text("")
    result = final = run_eval(submission, data_dir, out / EVAL_RESULT, log, fast=fast, demo=demo)
    notes = []
    if result.get("accuracies_percent"):
        draft.write_text(draft_text(result, json.loads(Path(metrics).read_text())), encoding="utf-8")
        if not mine.is_file():
            shutil.copyfile(draft, mine)
            notes.append(f"Wrote {mine}, a report draft from this run's numbers: write your discussion in it "
                         f"(the places marked {FILL_IN_MARKER}: ...>>), save it, and run this cell again.")
        elif drafted_for(mine) not in (None, result["weights"].get("fingerprint")):
            notes.append(f"Note: {mine} was drafted for run {drafted_for(mine)}, not this run: update its numbers "
                         f"from {draft}.")
        if (submission / REPORT_FILE).read_bytes() != mine.read_bytes():
            shutil.copyfile(mine, submission / REPORT_FILE)
            final = with_report_checks(result, submission / REPORT_FILE, demo=demo)
            with open(log, "a", encoding="utf-8") as f:
                f.write(f"{mine} handed in as report.md, checked again: {final['summary']}\n")
    (out / EVAL_FINAL).write_text(json.dumps(final, indent=2) + "\n")
    lines = assembled.getvalue().splitlines() + verdict_lines(submission, mine, final, log) + notes
    write_verdict(submission / NOTEBOOK_FILE, lines)
    return _say(HandIn(True, ok=final["ok"], lines=lines, result=result, final=final))


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
    return None


def run_eval(submission: Path, data_dir, json_path: Path, log: Path, *, fast: bool = False, demo: bool = False,
             python: str | os.PathLike = sys.executable, timeout_s: float | None = None) -> dict:
    """`python eval.py` on the folder (`python`: make hub's venv runs it under the hub's versions; `timeout_s`: its
    limit there, none in Section 7, where the student sees it run); its output appended to `log`; returns its
    JSON result."""
    submission, json_path = Path(submission).resolve(), Path(json_path).resolve()   # eval.py runs in the kit's folder
    command = [str(python), str(PROJECT_ROOT / "eval.py"), "-i", str(submission), "--json", str(json_path),
               "--no-progress"] + (["-d", str(Path(data_dir).resolve())] if data_dir else []) \
        + (["--fast"] if fast else []) + ([DEMO_FLAG] if demo else [])
    json_path.unlink(missing_ok=True)
    try:
        done = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise SubmissionError(f"eval.py ran longer than {timeout_s:.0f} s: {' '.join(command)}") from None
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(command)}\n{done.stdout}{done.stderr}\n(exit status {done.returncode})\n\n")
    if not json_path.is_file():
        raise SubmissionError(f"eval.py stopped without a result (exit status {done.returncode}); its output is "
                              f"in {log}:\n{(done.stdout + done.stderr)[-2000:]}")
    return json.loads(json_path.read_text())


def with_report_checks(result: dict, report_path: Path, *, demo: bool) -> dict:
    """eval.py's result with the checks of report.md made again on `report_path` (the report now handed in)."""
    checks = Report(folder=result["folder"], echo=False)
    check_report(checks, report_path, demo=demo)
    merged = [c for c in result["checks"] if not c["name"].startswith("report.md")] + \
        [c.as_dict() for c in checks.checks]
    ok = all(c["status"] != "fail" for c in merged)
    return {**result, "checks": merged, "ok": ok, "exit_status": 0 if ok else 1, "summary": summary(merged)}


def verdict_lines(submission: Path, report: Path, final: dict, log: Path) -> list[str]:
    """The short verdict: what was handed in, eval.py's summary, each FAIL and WARN line, the four accuracies."""
    lines = [f"Handed in to {submission}: models.py, final_model.safetensors, the saved notebook, and "
             f"{report.name if report.is_file() else 'a placeholder'} as report.md.",
             f"eval.py: {final['summary']}"]
    for check in final["checks"]:
        if check["status"] != "pass":
            fix = f" — {check['fix']}" if check["fix"] else ""
            lines.append(f"  {check['status'].upper()} {check['name']}: {check['message']}{fix}")
    acc = final.get("accuracies_percent") or {}
    if acc:
        lines.append(f"Accuracies (the grader's protocol): ID k-NN {format_percent(acc['id_knn'])}, linear "
                     f"{format_percent(acc['id_linear'])}; OOD k-NN {format_percent(acc['ood_knn'])}, linear "
                     f"{format_percent(acc['ood_linear'])}")
    else:
        lines.append(f"Accuracies not measured: {final.get('probes_skipped') or 'see the log'}")
    lines.append(f"Full log: {log}")
    return lines


def write_verdict(notebook: Path, lines: list[str]) -> None:
    """The verdict as the only output of the handed-in notebook's last cell that calls hand_in (nothing changes
    in a notebook without one)."""
    saved = read_notebook(notebook)
    cells = [c for c in saved["cells"] if c.get("cell_type") == "code" and "hand_in(" in cell_source(c)]
    if not cells:
        return
    cells[-1]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "\n".join(lines) + "\n"}]
    cells[-1]["execution_count"] = cells[-1].get("execution_count") or 1
    atomic_write(notebook, lambda tmp: Path(tmp).write_text(json.dumps(saved, indent=1, ensure_ascii=False) + "\n",
                                                             encoding="utf-8"))


def _say(handin: HandIn) -> HandIn:
    print("\n".join(handin.lines))
    return handin


def demo_run() -> bool:
    """True when `make demo` runs the notebook (it sets $CS461_DEMO=1): eval.py then accepts generated data."""
    return os.environ.get(DEMO_ENV) == "1"


# ----------------------------------------------------------------------------------------------------------
# Assembling the folder
# ----------------------------------------------------------------------------------------------------------

def set_arch_line(models_text: str, arch: str | None,
                  models_path: str | os.PathLike = MODELS_FILE) -> tuple[str, str | None]:
    """(text, old arch) with the `ARCH = "..."` line set to `arch`; old arch is None when nothing changed.
    Requires exactly one such line when a change is needed."""
    if not arch:
        return models_text, None
    matches = ARCH_LINE.findall(models_text)
    if len(matches) == 1 and matches[0] == arch:
        return models_text, None
    if len(matches) != 1:
        raise SubmissionError(f"the weights were trained with arch {arch!r}, so the submitted models.py must build "
                              f"it, but {models_path} has {len(matches)} lines matching `ARCH = \"...\"` at the "
                              f"start of a line (expected exactly one). Fix: keep a single line "
                              f"ARCH = \"{arch}\" in models.py, or export weights whose arch is what models.py "
                              f"builds. Nothing was copied.")
    return ARCH_LINE.sub(f'ARCH = "{arch}"', models_text, count=1), matches[0]


def assemble_submission(folder: str | os.PathLike, *, weights: str | os.PathLike,
                        notebook: str | os.PathLike = NOTEBOOK_FILE, report: str | os.PathLike = REPORT_FILE,
                        models: str | os.PathLike = MODELS_FILE) -> Path:
    """Copy the four files into `folder` (created if missing) under the names the grader expects.

    - Refuses, copying nothing, while the notebook's SCIPER or names are placeholders (the notebook is read
      from disk: save it first).
    - If the weights' safetensors metadata names an "arch" other than models.py's `ARCH = "..."` line, the
      copied models.py gets that line set to the weights' arch, so that the grader's `ImageEncoder()` builds
      the architecture the weights fit (e.g. a CPU demo trained with "tiny"). The source models.py is never
      modified. Returns the folder.
    """
    folder = expand_path(folder)
    sources = {MODELS_FILE: Path(models), WEIGHTS_FILE: Path(weights), NOTEBOOK_FILE: Path(notebook),
               REPORT_FILE: Path(report)}
    missing = [f"{name} (looked for {path})" for name, path in sources.items() if not path.is_file()]
    if missing:
        raise SubmissionError(f"cannot assemble the submission, source file(s) not found: {'; '.join(missing)}. "
                              f"Nothing was copied.")
    try:
        problems = identity_problems(notebook_identity(sources[NOTEBOOK_FILE]))
    except ValueError as error:
        raise SubmissionError(f"cannot read the notebook: {error}. Nothing was copied.") from error
    if problems:
        raise SubmissionError(f"the notebook {sources[NOTEBOOK_FILE]} does not name its author yet: "
                              f"{'; '.join(problems)}. Fix: {IDENTITY_FILL_IN}, save the notebook (Ctrl+S: this "
                              f"step reads it from disk), then run this step again. Nothing was copied.")
    try:
        weights_arch = weights_metadata(sources[WEIGHTS_FILE]).get("arch")
    except Exception as error:
        raise SubmissionError(f"{sources[WEIGHTS_FILE]} is not a readable safetensors file ({type(error).__name__}: "
                              f"{error}); export the weights again. Nothing was copied.") from error
    new_text, old_arch = set_arch_line(sources[MODELS_FILE].read_text(encoding="utf-8"), weights_arch,
                                       sources[MODELS_FILE])
    targets = {name: folder / name for name in SUBMISSION_FILES}
    same = {name for name, path in sources.items() if targets[name].exists() and targets[name].samefile(path)}
    if MODELS_FILE in same and old_arch is not None:
        raise SubmissionError(f"{sources[MODELS_FILE]} is the submission folder's own models.py, and it would have "
                              f"to be rewritten (ARCH \"{old_arch}\" -> \"{weights_arch}\"); your models.py is never "
                              f"modified. Assemble into another folder. Nothing was copied.")
    folder.mkdir(parents=True, exist_ok=True)
    for name in (WEIGHTS_FILE, NOTEBOOK_FILE, REPORT_FILE):
        if name not in same:
            shutil.copyfile(sources[name], targets[name])
    if MODELS_FILE not in same:
        atomic_write(targets[MODELS_FILE], lambda tmp: Path(tmp).write_text(new_text, encoding="utf-8"))
    if old_arch is not None:
        print(f"Notice: {sources[WEIGHTS_FILE]} was trained with arch {weights_arch!r} but {sources[MODELS_FILE]} "
              f"builds {old_arch!r}. The copy {targets[MODELS_FILE]} says ARCH = \"{weights_arch}\" so that the "
              f"grader's ImageEncoder() builds the architecture of the weights; your {sources[MODELS_FILE]} is "
              f"unchanged.")
    print(f"Submission assembled in {folder}: {', '.join(SUBMISSION_FILES)}. "
          f"Check it with: python eval.py -i {folder}")
    return folder


# ----------------------------------------------------------------------------------------------------------
# The report draft from the student's own run: its numbers (eval.py's result, the training metrics), its
# settings, the course's baselines, and DRAFT_PLACES marked places for the discussion that is theirs to write
# ----------------------------------------------------------------------------------------------------------

OBJECTIVES = {"ntxent": "SimCLR's NT-Xent contrastive loss", "vicreg": "VICReg",
              "lejepa": "LeJEPA (invariance + SIGReg)", "dino": "DINO self-distillation"}


def fill_in(what: str) -> str:
    return f"{FILL_IN_MARKER}: {what}>>"


def draft_text(evaluation: dict, metrics: dict) -> str:
    """The draft's markdown, at most DRAFT_MAX_WORDS by `wc -w`. evaluation: eval.py's --json result
    (accuracies_percent); metrics: the run's training_metrics.json. Every number in it comes from one of them or
    from COURSE_BASELINES."""
    config, acc = metrics["config"], evaluation.get("accuracies_percent") or {}
    if not all(key in acc for key in PROBE_LABELS):
        raise ValueError(f"eval.py's result has no accuracies ({evaluation.get('probes_skipped') or 'not run'}): "
                         f"fix the FAIL lines and run it again before drafting the report")
    data = metrics.get("data", {})
    views = f"{config['global_views']} views of 64 px"
    if config.get("local_views"):
        views += f" and {config['local_views']} of {config['local_size']} px"
    objective = ("decoupled contrastive learning (DCL)" if config.get("loss") == "ntxent" and config.get("decoupled")
                 else OBJECTIVES.get(config.get("loss"), str(config.get("loss"))))
    cell = lambda key: format_percent(acc[key])            # noqa: E731
    base = lambda key: f"{COURSE_BASELINES[key]:g}%" if key in COURSE_BASELINES else "not reported"  # noqa: E731
    origin = DATA_ORIGINS.get(data.get("trained_on"), "the data named in training_metrics.json")
    text = f"""# Report: {fill_in("your title")}

Run `{metrics['fingerprint']}` (the run id in the notebook's training output).

## Approach

The encoder `{config['arch']}` was trained from scratch, without labels, with {objective}, on
{data.get('n_train', '?')} training images of {origin}: {metrics['epochs']} epochs ({metrics['steps']} steps,
{metrics['train_minutes']:.1f} minutes on {metrics['device']}), batch {config['batch_size']}, {config['optimizer']} at
learning rate {config['lr']:g}, {views} per image. {fill_in("why this objective, network and augmentations")}

`get_features`: {fill_in("what it returns, and why this suits the two probes on unseen classes")}

## Results

The grader's protocol (`eval.py`): raw `get_features`, 5-NN and logistic regression, fitted on the
training images and scored on validation (ID), or fitted on 80% of the unseen-class images and scored on the
rest (OOD).

| | ID k-NN | ID linear | OOD k-NN | OOD linear |
|---|---|---|---|---|
| this run | {cell('id_knn')} | {cell('id_linear')} | {cell('ood_knn')} | {cell('ood_linear')} |
| course SimCLR baseline | {base('id_knn')} | {base('id_linear')} | {base('ood_knn')} | {base('ood_linear')} |

## Discussion of the OOD results

{fill_in("how far OOD falls below ID for each probe, and why")}

{fill_in("what you tried that did or did not help, with its numbers")}

{fill_in("what you would change next, and what it should show")}
"""
    if wc_word_count(text) > DRAFT_MAX_WORDS or text.count(FILL_IN_MARKER) != DRAFT_PLACES:
        raise ValueError(f"the report draft has {wc_word_count(text)} words by `wc -w` (at most {DRAFT_MAX_WORDS}) "
                         f"and {text.count(FILL_IN_MARKER)} marked places (expected {DRAFT_PLACES})")
    return text


def drafted_for(path: str | os.PathLike) -> str | None:
    """The run id a report (draft) names on its "Run `...`" line, None when it names none."""
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("Run `") and "`" in line[5:]:
            return line[5:line.index("`", 5)]
    return None
