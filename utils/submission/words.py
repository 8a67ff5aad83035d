"""report.md's words, counted two ways, since a TA may count either: like a reader (code blocks, markup and
link URLs do not count) and like `wc -w` (every whitespace-separated token, table rules and # included)."""
from __future__ import annotations

import re
from pathlib import Path

from utils.submission.course import FILL_IN_MARKER, MAX_REPORT_WORDS, SHORT_REPORT_WORDS
from utils.submission.report import Report


def _drop_fenced_code(text: str) -> str:
    """Text without fenced code blocks (``` or ~~~, closed by a fence of the same kind at least as long; an
    unclosed fence runs to the end, as in CommonMark)."""
    kept, fence = [], None
    for line in text.splitlines():
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if fence is None:
            opening = re.match(r"(`{3,}|~{3,})", stripped)
            if opening and indent <= 3:
                fence = opening.group(1)
                continue
            kept.append(line)
        elif stripped.startswith(fence) and not stripped.rstrip().strip(fence[0]):
            fence = None
    return "\n".join(kept)


def word_count(markdown_text: str) -> int:
    """Words of a markdown text as a reader counts them: fenced code blocks and HTML comments excluded, link
    URLs, HTML tags, list numbers and markdown punctuation (#, *, |, >, ---) not counted; a word is a
    whitespace-separated token holding at least one letter or digit ("self-supervised" and "36.1%" are one
    word each, a lone "—" is none)."""
    text = re.sub(r"<!--.*?(-->|\Z)", " ", markdown_text, flags=re.DOTALL)
    text = _drop_fenced_code(text)
    text = re.sub(r"!\[([^\]]*)\]\([^)]*\)", r" \1 ", text)               # images: keep the alt text
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r" \1 ", text)                # links: keep the text, drop the URL
    text = re.sub(r"^\s{0,3}\[[^\]]+\]:\s*\S+.*$", " ", text, flags=re.MULTILINE)  # reference definitions
    text = re.sub(r"\[([^\]]*)\]\[[^\]]*\]", r" \1 ", text)               # reference links
    text = re.sub(r"<(https?://|mailto:)[^>]*>", " ", text)               # autolinks
    text = re.sub(r"</?[A-Za-z][^<>]*>", " ", text)                       # HTML tags
    text = re.sub(r"^\s*\d+[.)](?=\s)", " ", text, flags=re.MULTILINE)    # ordered-list numbers
    text = text.replace("|", " ")                                         # table cells
    return sum(1 for token in text.split() if re.search(r"[^\W_]", token))


def wc_word_count(text: str) -> int:
    """Words as `wc -w` counts them: whitespace-separated tokens, whatever they hold."""
    return len(text.split())


def check_report(report: Report, path: Path) -> None:
    text = path.read_text(encoding="utf-8", errors="replace")
    words, wc_words = word_count(text), wc_word_count(text)
    counts = (f"{words} words counted as a reader does (without code blocks, HTML comments, link URLs and "
              f"markdown syntax), {wc_words} by `wc -w`")
    name = "report.md words"
    longest = max(words, wc_words)
    if longest > MAX_REPORT_WORDS:
        report.failed(name, f"{counts}; expected at most {MAX_REPORT_WORDS} by both counts (a TA may use either)",
                      f"shorten it by {longest - MAX_REPORT_WORDS} words")
    elif words < SHORT_REPORT_WORDS:
        report.warned(name, f"only {words} words; the report should discuss your OOD results",
                      f"write the discussion (at most {MAX_REPORT_WORDS} words)")
    else:
        report.passed(name, f"{counts} (limit {MAX_REPORT_WORDS} by both)")
    marked = text.count(FILL_IN_MARKER)
    if marked:
        report.warned("report.md written", f"{path.name} still has {marked} place{'s' if marked != 1 else ''} marked "
                      f"{FILL_IN_MARKER}: ...>> (the kit's draft): the discussion of your OOD results is yours to "
                      f"write", "replace every marked place with your own text, then hand it in again")
