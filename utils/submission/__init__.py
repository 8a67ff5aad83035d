"""The pre-submission check behind `python eval.py`, and the notebook's hand-in step.

`check_submission(folder)` does what the course's grader does to a submission folder, and more, so that a
student learns before the deadline what the grader would trip on:

1. structure: the folder and its four files; the grader's own first steps in a fresh `python -I` (grader.py:
   models.py imported as `custom_model` and never put in sys.modules, beside a stand-in for the course's
   utils.py; `ImageEncoder()`; strict `load_model`; `eval()`; the shape check on randn(1, 3, 64, 64)); then,
   in this process, `models.py` self-contained (its imports, also inside functions), the course's class
   variables, the feature statistics fitted, finite (B, 1000) `get_features`; what the weights record of their run
   (trained on real images, not the kit's generated data, except with --demo; a CPU-sized network warns); the
   notebook executed (every code cell of Sections 5 and 6 ran; the weights' run fingerprint in its outputs) and
   naming its author; `report.md` within 500 words (counted two ways), no `<<FILL IN` left; the data files valid;
2. the grader's protocol, only when no check that the accuracies depend on failed (the notebook's, the report's and
   the training data's do not stop it): raw `get_features` outputs of ToTensor images, batch 64; k-NN (k=5) and logistic-regression
   probes fit on train and scored on val (in-distribution), fit on 80% of ood and scored on the other 20%.

Every finding is a `Check` (pass / fail / warn) whose message says what is wrong, what was expected, what was
found, and whose `fix` says how to fix it. Nothing is ever substituted: missing data is a failure, never
random tensors.

`assemble_submission(folder, weights=...)` copies the four files into the submission folder; `handin.hand_in`,
the notebook's Section 7, calls it before running eval.py. It refuses while the notebook's identity is still a placeholder, and makes the
copied models.py build the architecture the weights were trained with.

Where each part lives:

    course.py           what the course expects: the four files, class variables, word limit, allowed imports
    report.py           Check and Report (the findings, the four accuracies), accuracy_lines
    check.py            check_submission: the whole check, in order; the folder and its files
    grader.py           the grader's own sequence in a fresh interpreter (grader_replica/: its eval.py, utils.py)
    model_checks.py     models.py and the weights: the grader's steps, imports, class variables, strict load, features
    notebook_checks.py  the notebook: valid, executed (outputs in Sections 5 and 6, the weights' run), identity
    training_checks.py  what the weights record of their run: real images (not the generated data), network size
    words.py            report.md's word count
    data_checks.py      the data files
    protocol.py         raw get_features, then utils.probes.evaluate_protocol (the grader's protocol)
    assemble.py         assemble_submission: copy the four files
    handin.py           the notebook's Section 7: refuse an unsaved notebook, copy, eval.py, the short verdict
    report_draft.py     the report draft from the run's own numbers, with places marked for the student
"""
from utils.submission.assemble import assemble_submission, set_arch_line
from utils.submission.check import check_submission
from utils.submission.course import (DEFAULT_SUBMISSION_DIR, GRADER_BATCH_SIZE, MAX_REPORT_WORDS, SUBMISSION_FILES,
                                     SubmissionError, expand_path)
from utils.submission.data_checks import check_data
from utils.checkpoint import weights_arch, weights_metadata   # re-exported: the weights-file readers live there
from utils.submission.model_checks import pretrained_or_network_uses
from utils.submission.notebook_checks import identity_problems, notebook_identity
from utils.submission.protocol import run_probes, run_protocol
from utils.submission.report import Check, Report, accuracy_lines, format_percent
from utils.submission.words import wc_word_count, word_count

__all__ = ["Check", "DEFAULT_SUBMISSION_DIR", "GRADER_BATCH_SIZE", "MAX_REPORT_WORDS", "Report", "SUBMISSION_FILES",
           "SubmissionError", "accuracy_lines", "assemble_submission", "check_data", "check_submission",
           "expand_path", "format_percent", "identity_problems", "notebook_identity", "pretrained_or_network_uses",
           "run_probes", "run_protocol", "set_arch_line", "wc_word_count", "weights_arch", "weights_metadata",
           "word_count"]
