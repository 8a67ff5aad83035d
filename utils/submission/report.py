"""A check's finding (`Check`) and the list of them with the four accuracies (`Report`)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Check:
    """One finding. status: "pass", "fail" or "warn". message: what was found (for a failure: what is wrong,
    what was expected, what was found). fix: how to fix it ("" when there is nothing to do)."""
    name: str
    status: str
    message: str = ""
    fix: str = ""

    def line(self) -> str:
        """"PASS name", "FAIL name: what is wrong — how to fix it", "WARN name: ..."."""
        text = f"{self.status.upper()} {self.name}"
        if self.message:
            text += f": {self.message}"
        if self.fix:
            text += f" — {self.fix}"
        return text

    def as_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "ok": self.status != "fail",
                "message": self.message, "fix": self.fix}


@dataclass
class Report:
    """Everything check_submission found: the checks in order, the four accuracies (percent), timings."""
    folder: str
    mode: str = "exact"                  # "exact" (scikit-learn, as the grader), "fast" (torch) or "quick"
    checks: list[Check] = field(default_factory=list)
    accuracies: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    device: str = ""
    data_dir: str | None = None
    probes_skipped: str = ""             # why the probes did not run ("" when they ran)
    weights_record: dict = field(default_factory=dict)   # what the weights' metadata says of their run
    echo: bool = True                    # print each check as it is made

    def add(self, name: str, status: str, message: str = "", fix: str = "") -> Check:
        check = Check(name, status, message, fix)
        self.checks.append(check)
        if self.echo:
            print(check.line(), flush=True)
        return check

    def passed(self, name: str, message: str = "") -> Check:
        return self.add(name, "pass", message)

    def failed(self, name: str, message: str, fix: str = "") -> Check:
        return self.add(name, "fail", message, fix)

    def warned(self, name: str, message: str, fix: str = "") -> Check:
        return self.add(name, "warn", message, fix)

    def note(self, text: str) -> None:
        """A line of information that is not a check."""
        if self.echo:
            print(text, flush=True)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks if c.status == "warn"]

    @property
    def ok(self) -> bool:
        """True when no check failed (warnings allowed)."""
        return not self.failures

    @property
    def exit_status(self) -> int:
        """eval.py's exit status: 0 when no check failed, 1 otherwise (also written in its --json file)."""
        return 0 if self.ok else 1

    def check(self, name: str) -> Check | None:
        """The last check with this name (None if it was not made)."""
        return next((c for c in reversed(self.checks) if c.name == name), None)

    def summary(self) -> str:
        """One line: "All 21 checks passed (1 warning)." or "2 checks failed: a, b"."""
        warned = len(self.warnings)
        warn_text = f" ({warned} warning{'s' if warned != 1 else ''})" if warned else ""
        if self.ok:
            return f"All {len(self.checks)} checks passed{warn_text}."
        names = ", ".join(c.name for c in self.failures)
        count = len(self.failures)
        return f"{count} check{'s' if count != 1 else ''} failed: {names}{warn_text}."

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "exit_status": self.exit_status,
            "summary": self.summary(),
            "folder": self.folder,
            "mode": self.mode,
            "device": self.device,
            "data_dir": self.data_dir,
            "checks": [c.as_dict() for c in self.checks],
            "accuracies_percent": dict(self.accuracies),
            "probes_skipped": self.probes_skipped,
            "weights": dict(self.weights_record),
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
        }


def format_percent(value: float) -> str:
    """36.1234 (a percentage) -> "36.12%". Accuracies in this module are always percentages."""
    return f"{value:.2f}%"


def accuracy_lines(report: Report) -> list[str]:
    """The four accuracies as the grader reports them, in percent."""
    if not report.accuracies:
        return []
    acc = report.accuracies
    return [f"  In-distribution (fit on train, scored on val):  k-NN {format_percent(acc['id_knn']):>7}   "
            f"linear {format_percent(acc['id_linear']):>7}",
            f"  Out-of-distribution (80% fit / 20% scored):     k-NN {format_percent(acc['ood_knn']):>7}   "
            f"linear {format_percent(acc['ood_linear']):>7}"]
