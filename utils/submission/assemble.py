"""Assembling the submission folder (the notebook's last section): copy the four files, refuse while the
notebook does not name its author, make the copied models.py build the weights' architecture."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from utils.checkpoint import atomic_write, weights_metadata
from utils.submission.course import (ARCH_LINE, MODELS_FILE, NOTEBOOK_FILE, REPORT_FILE, SUBMISSION_FILES,
                                     SubmissionError, WEIGHTS_FILE, expand_path)
from utils.submission.notebook_checks import IDENTITY_FILL_IN, identity_problems, notebook_identity


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
                        models: str | os.PathLike = MODELS_FILE, overwrite: bool = True) -> Path:
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
    models_text = sources[MODELS_FILE].read_text(encoding="utf-8")
    new_text, old_arch = set_arch_line(models_text, weights_arch, sources[MODELS_FILE])

    targets = {name: folder / name for name in SUBMISSION_FILES}
    if not overwrite:
        existing = [str(p) for p in targets.values() if p.exists()]
        if existing:
            raise SubmissionError(f"{', '.join(existing)} already exist(s) and overwrite=False. Nothing was copied.")
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
