"""Progress bars: tqdm redraws freely where it can, prints a few lines where it cannot (logs), and without tqdm
a plain line takes its place, throttled, announced once."""
import io
import sys

import pytest
import tqdm.std

from utils import environment, progress
from utils.progress import PlainProgress, progress_bar, progress_write


class FakeClock:
    """A clock that advances `step` seconds each time it is read: many quick steps, no real waiting."""

    def __init__(self, step: float):
        self.now, self.step = 1000.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def without_tqdm(monkeypatch):
    """A kernel without tqdm, in which no absence was announced yet."""
    monkeypatch.setattr(environment, "_announced", set())
    for module in ("tqdm", "tqdm.auto"):
        monkeypatch.setitem(sys.modules, module, None)


def refreshes(text: str) -> int:
    """How many times a bar was printed: tqdm separates its redraws with carriage returns."""
    return len([part for part in text.replace("\n", "\r").split("\r") if part.strip()])


def test_without_tqdm_a_plain_bar_iterates_and_the_fallback_is_announced_once(without_tqdm, capsys):
    out = io.StringIO()
    bar = progress_bar(range(7), desc="encode", unit="batch", file=out)
    assert isinstance(bar, PlainProgress)
    assert list(bar) == list(range(7))
    assert out.getvalue().splitlines()[-1].startswith("encode: 7/7 batch (100%)")
    assert list(progress_bar(range(3), desc="again", file=out)) == [0, 1, 2]
    printed = capsys.readouterr().out
    assert printed.count("note: tqdm cannot be imported") == 1
    assert "progress is a plain printed line" in printed


def test_without_tqdm_progress_write_prints_the_line(without_tqdm, capsys):
    progress_write("epoch 2: id_knn 10.0%")
    assert "epoch 2: id_knn 10.0%\n" in capsys.readouterr().out


def test_plain_bar_prints_at_most_one_line_per_interval():
    out = io.StringIO()
    # 10,000 quick steps over 100 simulated seconds (the clock is read once per update).
    bar = PlainProgress(total=10_000, desc="ntxent", unit="step", file=out, interval=5.0, clock=FakeClock(0.01))
    for _ in range(10_000):
        bar.update(1)
    bar.set_postfix(loss="4.1234", epoch=3)
    bar.close()
    bar.close()   # closing twice prints nothing more
    lines = out.getvalue().splitlines()
    assert 19 <= len(lines) <= 21, lines   # 100 s / 5 s, plus the final line
    assert lines[-1].startswith("ntxent: 10000/10000 step (100%)") and lines[-1].endswith("loss=4.1234, epoch=3")
    assert "step/s" in lines[0] and "s elapsed" in lines[0]


def test_plain_bar_without_total_and_disabled():
    out = io.StringIO()
    bar = PlainProgress(desc="budget", unit="step", file=out, interval=1.0, clock=FakeClock(2.0))
    bar.update(5)
    assert out.getvalue().startswith("budget: 5 step, ")
    quiet = io.StringIO()
    for _ in PlainProgress(range(100), disable=True, file=quiet, interval=0.0, clock=FakeClock(1.0)):
        pass
    assert quiet.getvalue() == ""


def test_tqdm_in_a_log_prints_only_a_few_lines_and_redraws_freely_in_a_terminal(monkeypatch):
    monkeypatch.setattr(tqdm.std.tqdm, "monitor_interval", 0)   # no monitor thread reading the real clock
    counts, seconds = {}, {}
    for name, stream in (("log", io.StringIO()), ("terminal", Terminal())):
        clock = FakeClock(0.05)
        monkeypatch.setattr(tqdm.std, "time", clock)
        start = clock.now
        bar = progress_bar(range(20_000), desc="train", file=stream)
        assert isinstance(bar, tqdm.std.tqdm)
        for _ in bar:
            pass
        counts[name], seconds[name] = refreshes(stream.getvalue()), clock.now - start
    # tqdm reads the clock only every few steps; a log gets one line per LOG_INTERVAL_S, plus the first and last
    assert seconds["log"] > 10 * progress.LOG_INTERVAL_S, seconds
    assert counts["log"] <= seconds["log"] / progress.LOG_INTERVAL_S + 2, (counts, seconds)
    assert counts["terminal"] > 5 * counts["log"], counts
