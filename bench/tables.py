"""Titled tables and their rendering as Markdown, HTML and LaTeX, with the number formats every view shares."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

from tabulate import tabulate

FORMATS = {"md": "github", "html": "html", "tex": "latex_booktabs", "text": "simple"}


def fmt_value(x: float | None, digits: int = 4) -> str:
    """A number for a table: fixed point, or scientific when very small or large; "" for NaN."""
    if x is None or x != x:
        return ""
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}f}"


def fmt_interval(mean: float, low: float, high: float, digits: int = 4) -> str:
    """``mean [low, high]``, or the mean alone when there is no interval."""
    if mean != mean:
        return ""
    if low != low or high != high:
        return fmt_value(mean, digits)
    return f"{fmt_value(mean, digits)} [{fmt_value(low, digits)}, {fmt_value(high, digits)}]"


def fmt_count(x: float) -> str:
    """A count or a cost shown as a plain number (no interval, no rank)."""
    if x != x:
        return ""
    return f"{x:,.0f}" if float(x).is_integer() else fmt_value(x)


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class Leaderboard:
    """Titled tables and paragraphs, grouped into sections."""

    sections: dict[str, list[Table | str]] = field(default_factory=dict)

    def add(self, section: str, item: Table | str) -> None:
        self.sections.setdefault(section, []).append(item)

    def render(self, fmt: str = "md") -> str:
        """The whole board as Markdown ("md"), an HTML fragment ("html"), LaTeX ("tex") or plain text."""
        out = []
        for section, items in self.sections.items():
            out.append(heading(section, 2, fmt))
            for item in items:
                out.append(paragraph(item, fmt) if isinstance(item, str) else render_table(item, fmt))
        return "\n\n".join(out) + "\n"


def render_table(table: Table, fmt: str) -> str:
    parts = [heading(table.title, 3, fmt)] if table.title else []
    if table.note:
        parts.append(paragraph(table.note, fmt))
    parts.append(tabulate(table.rows, headers=table.headers, tablefmt=FORMATS[fmt], disable_numparse=True))
    return "\n\n".join(parts)


def heading(text: str, level: int, fmt: str) -> str:
    if fmt == "html":
        return f"<h{level}>{html.escape(text)}</h{level}>"
    if fmt == "tex":
        return ("\\section*{" if level == 2 else "\\subsection*{") + tex_escape(text) + "}"
    if fmt == "text":
        return text + "\n" + ("=" if level == 2 else "-") * len(text)
    return "#" * level + " " + text


def paragraph(text: str, fmt: str) -> str:
    if fmt == "html":
        return f"<p>{html.escape(text)}</p>"
    if fmt == "tex":
        return tex_escape(text)
    return text


def tex_escape(text: str) -> str:
    return text.replace("_", "\\_").replace("%", "\\%").replace("&", "\\&")
