"""One table builder for every table hashbench prints or writes: the terminal, Markdown and HTML.

A :class:`Table` holds its cells as text, already formatted by the caller (so "0.900" stays "0.900" in
every rendering), and one alignment per column: right for numbers, left for the rest unless told.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

Align = Literal["left", "right"]


def cell(value: Any, float_format: str = "") -> str:
    """A value as table text: None and NaN empty, floats with ``float_format`` (e.g. ".4f") when given."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and float_format:
        return format(value, float_format)
    return str(value)


def _numeric(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True


@dataclass
class Table:
    """A header row, rows of text cells and an alignment per column (default: right where every
    non-empty cell is a number, e.g. "0.812", "1,024" or "-"; left otherwise)."""

    headers: list[str]
    rows: list[list[str]]
    align: list[Align] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.headers = [str(h) for h in self.headers]
        self.rows = [[str(c) for c in row] for row in self.rows]
        for row in self.rows:
            if len(row) != len(self.headers):
                raise ValueError(f"a row has {len(row)} cells for {len(self.headers)} headers: {row}")
        if not self.align:
            self.align = [self._guess(i) for i in range(len(self.headers))]
        elif len(self.align) != len(self.headers):
            raise ValueError(f"{len(self.align)} alignments for {len(self.headers)} columns")

    @classmethod
    def from_frame(cls, frame, float_format: str = "") -> "Table":
        """A pandas DataFrame's columns and rows (the index is left out)."""
        return cls(list(frame.columns), [[cell(v, float_format) for v in row]
                                         for row in frame.itertuples(index=False, name=None)])

    def _guess(self, column: int) -> Align:
        values = [row[column] for row in self.rows if row[column] not in ("", "-", "–")]
        return "right" if values and all(_numeric(v) for v in values) else "left"

    def _widths(self, rows: list[list[str]]) -> list[int]:
        return [max(len(text) for text in column) for column in zip(*rows)]

    def _pad(self, texts: Sequence[str], widths: list[int]) -> list[str]:
        return [t.rjust(w) if a == "right" else t.ljust(w) for t, w, a in zip(texts, widths, self.align)]

    def to_text(self) -> str:
        """Plain columns for a terminal: the headers underlined with dashes, two spaces between columns."""
        widths = self._widths([self.headers, *self.rows])
        lines = [self._pad(self.headers, widths), ["-" * w for w in widths]]
        lines += [self._pad(row, widths) for row in self.rows]
        return "\n".join("  ".join(line).rstrip() for line in lines)

    def to_markdown(self) -> str:
        """A GitHub-flavoured Markdown pipe table, columns padded and aligned with ``:``."""
        escaped = [[text.replace("|", "\\|") for text in row] for row in [self.headers, *self.rows]]
        widths = [max(w, 3) for w in self._widths(escaped)]
        rule = [("-" * (w - 1) + ":") if a == "right" else ("-" * w) for w, a in zip(widths, self.align)]
        lines = [self._pad(escaped[0], widths), rule] + [self._pad(row, widths) for row in escaped[1:]]
        return "\n".join("| " + " | ".join(line) + " |" for line in lines)

    def to_html(self) -> str:
        """An HTML table (escaped); right-aligned columns carry class ``num``."""
        def cells(tag: str, texts: Sequence[str]) -> str:
            return "".join(f"<{tag} class='num'>{html.escape(t)}</{tag}>" if a == "right" else
                           f"<{tag}>{html.escape(t)}</{tag}>" for t, a in zip(texts, self.align))

        body = "".join(f"<tr>{cells('td', row)}</tr>" for row in self.rows)
        return f"<table><thead><tr>{cells('th', self.headers)}</tr></thead><tbody>{body}</tbody></table>"
