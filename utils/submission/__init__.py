"""The pre-submission check behind `python eval.py`, and the notebook's hand-in (Section 7).

`check_submission(folder)` does what the course's grader does to a submission folder, and more, so that a student
learns before the deadline what the grader would trip on: the folder and its files; the grader's own first steps
in a fresh `python -I` (grader.py); models.py and the weights looked at closer (model_checks.py); what the weights
record of their run; the notebook (executed, by this run, naming its author: notebook_checks.py); report.md; the
data files; then the grader's protocol. Every finding is a `Check` (pass / fail / warn) whose message says what is
wrong, what was expected and what was found, and whose `fix` says how to fix it. Nothing is ever substituted:
missing data is a failure, never random tensors.

    course.py           the checks' vocabulary: what the course expects, Check and Report, printed accuracies
    check.py            check_submission, in the grader's order: files, training record, report.md, data, protocol
    grader.py           the grader's own sequence in a fresh interpreter (grader_replica/: its eval.py, utils.py)
    model_checks.py     models.py and the weights: the grader's steps explained, imports, class variables, features
    notebook_checks.py  the notebook: valid, executed (outputs in Sections 5 and 6, the weights' run), identity
    handin.py           Section 7: refuse a stale notebook, assemble the folder, eval.py, the report draft, the verdict

Tests: each module's docstring names its tests (tests/test_eval.py, test_grader.py, test_handin.py).
"""
from utils.checkpoint import weights_arch, weights_metadata   # re-exported: the weights-file readers live there
from utils.submission.check import check_data, check_submission, wc_word_count, word_count
from utils.submission.course import (DEFAULT_SUBMISSION_DIR, GRADER_BATCH_SIZE, MAX_REPORT_WORDS, SUBMISSION_FILES,
                                     Check, Report, SubmissionError, accuracy_lines, expand_path, format_percent)
from utils.submission.handin import assemble_submission, set_arch_line
from utils.submission.model_checks import pretrained_or_network_uses
from utils.submission.notebook_checks import identity_problems, notebook_identity

__all__ = ["Check", "DEFAULT_SUBMISSION_DIR", "GRADER_BATCH_SIZE", "MAX_REPORT_WORDS", "Report", "SUBMISSION_FILES",
           "SubmissionError", "accuracy_lines", "assemble_submission", "check_data", "check_submission",
           "expand_path", "format_percent", "identity_problems", "notebook_identity", "pretrained_or_network_uses",
           "set_arch_line", "wc_word_count", "weights_arch", "weights_metadata", "word_count"]
