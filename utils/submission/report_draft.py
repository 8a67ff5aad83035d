"""A report draft from the student's own run: its numbers (eval.py's result, the training metrics), its
settings, the course's baselines, and marked places ("<<FILL IN: ...>>") for the discussion that is theirs to
write. Section 7 hands it in as report.md the first time (as my_report.md, which it never overwrites); eval.py
warns while a marked place is left. At most DRAFT_MAX_WORDS by `wc -w`, so the student has room to write.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from utils.data import DATA_ORIGINS
from utils.submission.course import COURSE_BASELINES, FILL_IN_MARKER
from utils.submission.report import format_percent

DRAFT_MAX_WORDS = 450
OBJECTIVES = {"ntxent": "SimCLR's NT-Xent contrastive loss", "vicreg": "VICReg",
              "lejepa": "LeJEPA (invariance + SIGReg)", "dino": "DINO self-distillation"}
ACCURACY_KEYS = ("id_knn", "id_linear", "ood_knn", "ood_linear")


def fill_in(what: str) -> str:
    return f"{FILL_IN_MARKER}: {what}>>"


def objective_name(config: dict) -> str:
    if config.get("loss") == "ntxent" and config.get("decoupled"):
        return "decoupled contrastive learning (DCL)"
    return OBJECTIVES.get(config.get("loss"), str(config.get("loss")))


def draft_text(evaluation: dict, metrics: dict) -> str:
    """The draft's markdown. evaluation: eval.py's --json result (accuracies_percent); metrics: the run's
    training_metrics.json. Every number in it comes from one of them or from COURSE_BASELINES."""
    config, acc = metrics["config"], evaluation.get("accuracies_percent") or {}
    if not all(key in acc for key in ACCURACY_KEYS):
        raise ValueError(f"eval.py's result has no accuracies ({evaluation.get('probes_skipped') or 'not run'}): "
                         f"fix the FAIL lines and run it again before drafting the report")
    data = metrics.get("data", {})
    views = f"{config['global_views']} views of 64 px"
    if config.get("local_views"):
        views += f" and {config['local_views']} of {config['local_size']} px"
    cell = lambda key: format_percent(acc[key])            # noqa: E731
    base = lambda key: f"{COURSE_BASELINES[key]:g}%" if key in COURSE_BASELINES else "not reported"  # noqa: E731
    origin = DATA_ORIGINS.get(data.get("trained_on"), "the data named in training_metrics.json")
    return f"""# Report: {fill_in("your title")}

Run `{metrics['fingerprint']}` (the fingerprint in the notebook's training output).

## Approach

The encoder `{config['arch']}` was trained from scratch, without labels, with {objective_name(config)}, on
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


def write_report_draft(path: str | os.PathLike, evaluation: dict, metrics: dict) -> Path:
    """Write draft_text to `path` (replacing it: the draft is the kit's file, the student's copy is another).
    ValueError if it came out longer than DRAFT_MAX_WORDS by `wc -w`."""
    text = draft_text(evaluation, metrics)
    words = len(text.split())
    if words > DRAFT_MAX_WORDS:
        raise ValueError(f"the report draft has {words} words by `wc -w`, over its {DRAFT_MAX_WORDS}")
    path = Path(path)
    path.write_text(text, encoding="utf-8")
    return path


def drafted_for(path: str | os.PathLike) -> str | None:
    """The run fingerprint a report (draft) names on its "Run `...`" line, None when it names none."""
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("Run `") and "`" in line[5:]:
            return line[5:line.index("`", 5)]
    return None


def load_json(path: str | os.PathLike) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))
