"""`make demo`: run CS461_Assignment1.ipynb end to end, headless, in the short CPU profile.

Leaves in demo_output/: the executed notebook (and an HTML copy), figures/, final_model.safetensors,
training_metrics.json, submission/ (the four files), and what the notebook's Section 7 wrote (utils/submission/
handin.py): eval_log.txt, eval_result.json (eval.py: the grader's checks and exact protocol), report_draft.md and
my_report.md (the report drafted from the run's numbers), eval_final.json (the checks of what is handed in,
my_report.md as report.md); then course_grader.txt (what the course grader's own sequence, the replica in
utils/submission/grader.py, printed on the submission), and demo_record.json: eval.py's numbers and the
replica's beside them, with the device, commit, training settings and timings they came from.

The notebook is saved after every cell, as a student saves before Section 7 (which hands in the saved file);
its identity cell gets an obvious demo identity (SCIPER 100000, "Demo Student"). $CS461_DEMO=1 tells Section 7
to pass eval.py --demo, which accepts weights trained on the generated data.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))      # run as `python tools/demo.py`: the project's packages

from utils.headless import NOTEBOOK, run_short_profile  # noqa: E402
from utils.probes import PROBE_LABELS  # noqa: E402
from utils.submission.course import DEMO_ENV  # noqa: E402
from utils.submission.handin import DRAFT, EVAL_FINAL, EVAL_LOG, EVAL_RESULT, MY_REPORT  # noqa: E402

OUTPUT = ROOT / "demo_output"
# What the short profile must reach on the embedded default data for the demo's figures to show learning
# (clusters in the t-SNE/UMAP plots, mostly right predictions): eval.py's k-NN accuracy, in multiples of chance
# (100% / the number of classes).
LEARNING_BAR = {"id_knn": 4.0, "ood_knn": 3.0}


def course_grader_check(submission: Path, data_dir: str) -> dict:
    """The course grader's own sequence (the replica, in a clean `python -I`) on the final submission and the
    data eval.py used; what it printed goes to course_grader.txt. Returns its steps, accuracies (fractions, as
    the course prints them) and versions."""
    from utils.submission.grader import run_course_grader
    run = run_course_grader(submission, data_dir=data_dir)
    (OUTPUT / "course_grader.txt").write_text(run.stdout + run.stderr)
    print(run.stdout, end="")
    if not run.ok:
        print(f"error: the course grader's sequence failed: {run.step_text()} (see {OUTPUT / 'course_grader.txt'})")
    return run.record()


def grader_agrees(grader: dict, eval_percent: dict[str, float]) -> bool:
    """eval.py measured the accuracies and the replica printed the same (utils.submission.grader's rule)."""
    from utils.submission.grader import accuracy_differences
    return bool(eval_percent) and not accuracy_differences(grader.get("accuracies_fraction", {}), eval_percent)


def learning_check(accuracies: dict[str, float], id_classes: int, ood_classes: int) -> dict[str, dict]:
    """Each LEARNING_BAR accuracy (percent) against chance: {"id_knn": {"accuracy", "chance", "times_chance",
    "required", "ok"}, ...}. A missing accuracy (the probes did not run) is not ok."""
    classes = {"id_knn": id_classes, "ood_knn": ood_classes}
    check = {}
    for key, required in LEARNING_BAR.items():
        chance = 100.0 / classes[key]
        accuracy = accuracies.get(key)
        times = None if accuracy is None else round(accuracy / chance, 2)
        check[key] = {"accuracy": accuracy, "chance": round(chance, 2), "times_chance": times,
                      "required": required, "ok": times is not None and times >= required}
    return check


def learning_warnings(check: dict[str, dict]) -> list[str]:
    """One warning line per accuracy of learning_check below its bar."""
    lines = []
    for key, c in check.items():
        if c["ok"]:
            continue
        got = "not measured" if c["accuracy"] is None else f"{c['accuracy']:.2f}% ({c['times_chance']:.1f}x chance)"
        lines.append(f"WARNING: {PROBE_LABELS[key]} {got} is below the demo's bar of {c['required']:g}x chance "
                     f"({c['required'] * c['chance']:.1f}%; chance is {c['chance']:.2f}%): the encoder did not "
                     f"visibly learn, and the embedding figures will show no clusters. Check the 'short' recipe "
                     f"in utils/config.py (and the training log in the executed notebook).")
    return lines


def count_classes(data_dir: Path) -> tuple[int, int]:
    """(ID classes in train.npz, OOD classes in ood.npz) of the data the notebook trained on (and eval.py used:
    both resolve the same folder, utils.data.locate_data_dir)."""
    import numpy as np
    with np.load(data_dir / "train.npz") as train, np.load(data_dir / "ood.npz") as ood:
        return len(np.unique(train["labels"])), len(np.unique(ood["labels"]))


def write_record(notebook_seconds: float, demo_code: int, evaluation: dict, final: dict, grader: dict) -> Path:
    """demo_record.json: what was measured (eval.py's exact-protocol accuracies, `evaluation`; `final`: the checks
    of what was handed in), on what data, with which settings, on which machine and commit. A copy is committed
    under benchmarks/results/ when it is quoted."""
    from utils.provenance import provenance
    metrics = json.loads((OUTPUT / "training_metrics.json").read_text())
    record = {
        "what": "make demo: CS461_Assignment1.ipynb executed headless in the short CPU profile, saved after "
                "every cell; its Section 7 ran eval.py --demo (the grader's checks and exact protocol) on the "
                "assembled submission, drafted the report from its numbers, and checked the report again as handed "
                "in (my_report.md as report.md)",
        **provenance("cpu"),
        "profile": os.environ.get("CS461_PROFILE", "short"),
        "data": {**metrics["data"], "kind": "embedded default data (utils.synthetic, size 'small')"},
        "training": {k: metrics[k] for k in ("config", "fingerprint", "device", "steps", "epochs", "train_minutes")},
        "notebook_seconds": round(notebook_seconds, 1),
        "demo_exit_status": demo_code,
        "section_7_ok": evaluation["ok"] and final["ok"],
        "section_7_eval_exit_status": evaluation["exit_status"],
        "section_7_eval_summary": evaluation["summary"],
        "final_check_summary": final["summary"],
        "eval_accuracies_percent": evaluation["accuracies_percent"],
        "course_grader": {**grader, "agrees_with_eval": grader_agrees(grader, evaluation["accuracies_percent"])},
        "eval_timings_s": evaluation["timings_s"],
        "training_final_fast_probes_percent": metrics["final"],
        "learning_check": learning_check(evaluation["accuracies_percent"],
                                         *count_classes(ROOT / Path(metrics["data"]["train"]).parent)),
    }
    path = OUTPUT / "demo_record.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def main() -> int:
    OUTPUT.mkdir(exist_ok=True)
    # only this run's verdicts and report may be recorded
    for stale in (EVAL_RESULT, EVAL_FINAL, EVAL_LOG, MY_REPORT, DRAFT):
        (OUTPUT / stale).unlink(missing_ok=True)
    print(f"Executing {NOTEBOOK.name} (profile {os.environ.get('CS461_PROFILE', 'short')}) ...", flush=True)
    run = run_short_profile(OUTPUT, static_widgets=True, env={DEMO_ENV: "1"})
    executed, submission = Path(run["notebook"]), OUTPUT / "submission"
    if not run["ok"]:
        print(f"error: the notebook stopped: {run['error']}")
    print(f"Notebook executed in {run['seconds']:.0f} s -> {executed}")
    try:
        from nbconvert import HTMLExporter
        html, _ = HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
        (OUTPUT / "CS461_Assignment1.html").write_text(html)
    except Exception as error:  # the HTML copy is a convenience; the executed notebook is the record
        print(f"note: no HTML copy ({type(error).__name__}: {error})")

    # Section 7 writes both files whenever it handed in (a refusal copies nothing and runs no eval.py).
    if not (OUTPUT / EVAL_FINAL).is_file():
        print(f"error: Section 7 wrote no {OUTPUT / EVAL_FINAL}: it did not run eval.py (see its output "
              f"in {executed}).")
        return 1
    evaluation = json.loads((OUTPUT / EVAL_RESULT).read_text())
    final = json.loads((OUTPUT / EVAL_FINAL).read_text())
    print(f"Section 7: eval.py {evaluation['summary']} As handed in: {final['summary']}")
    code = 0
    if not (evaluation["ok"] and final["ok"]):
        print(f"Section 7's eval.py found failures (see {OUTPUT / EVAL_LOG} and the executed notebook).")
        code = 1
    print("The course grader's own sequence on the submission:", flush=True)
    grader = course_grader_check(submission, evaluation["data_dir"])
    if not (grader["ok"] and grader_agrees(grader, evaluation["accuracies_percent"])):
        print(f"error: the course grader's numbers {grader['accuracies_fraction']} differ from eval.py's "
              f"{evaluation['accuracies_percent']}" if grader["ok"] else "error: see the grader's failure above")
        code = code or 1
    record_path = write_record(run["seconds"], code, evaluation, final, grader)
    print(f"Record: {record_path}")
    for line in learning_warnings(json.loads(record_path.read_text())["learning_check"]):
        print(line)
    print(f"Demo outputs in {OUTPUT}/ (exit status {code}).")
    return code


if __name__ == "__main__":
    sys.exit(main())
