"""A table laid out by hand for long listings: the look of rich's ``box.SIMPLE_HEAD`` tables.

rich's ``Table`` measures, wraps and pads every cell through its generic renderables: laying
out the terminal's 2,000 session rows took it a second, more than analysing the 144,000
packets they came from. Here a cell is a few styled paragraphs (``Span``s) wrapped word by word
to its column's width; the lines are joined into one ``rich.text.Text`` (so colour, ``NO_COLOR``
and a recording console behave as before) and printed once.

Widths are shared as rich shares them (the same text, line for line): a column that does not
wrap is as wide as its widest cell; the others are as wide as their longest line if that fits,
else the widest are narrowed first; with ``expand``, they share the whole width by ``ratio``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from rich.cells import cell_len, chop_cells, set_cell_size
from rich.console import Console
from rich.text import Span as RichSpan
from rich.text import Text

#: A run of text and its rich style ("" for none).
Span = tuple[str, str]
#: A cell: paragraphs (each a list of spans), each starting on a line of its own.
Cell = list[list[Span]]

ELLIPSIS = "…"
_WORD = re.compile(r"\s*\S+\s*")


@dataclass(frozen=True)
class Column:
    header: str
    justify: str = "left"  # or "right"
    wrap: bool = True  # False: one line, as wide as its widest cell
    ratio: int = 0  # with expand: its share of the width left by the others
    overflow: str = "fold"  # a word longer than the column: cut ("fold") or shortened with … ("ellipsis")


def paragraph(*spans: Span | str) -> list[Span]:
    """A paragraph from strings (no style) and (text, style) pairs."""
    return [(span, "") if isinstance(span, str) else span for span in spans]


def print_table(console: Console, columns: Sequence[Column], rows: Iterable[Sequence[Cell]], *, width: int | None = None,
                expand: bool = False, lines_between: bool = False, header_style: str = "bold") -> None:
    """Lay ``rows`` out under ``columns`` and print them as one text (see the module docstring)."""
    rows = [list(row) for row in rows]
    total = console.width if width is None else width
    widths = _widths(columns, rows, total, expand)
    table_width = 2 + sum(w + 2 for w in widths) + len(widths) - 1
    out = _Builder()
    blank = " " * table_width + "\n"
    out.add(blank)
    _add_row(out, columns, widths, [[[(c.header, header_style)]] for c in columns], bottom=True)
    out.add(" " + "─" * (table_width - 2) + " \n")
    for number, row in enumerate(rows):
        if lines_between and number:
            out.add(blank)
        _add_row(out, columns, widths, row)
    out.add(blank)
    console.print(out.text(styled=console.color_system is not None), crop=False, soft_wrap=True)


class _Builder:
    """The table's text and its styled stretches, gathered in pieces: one ``Text`` at the end
    (appending to a Text piece by piece cost as much as rich's own table)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.styles: list[RichSpan] = []
        self.length = 0

    def add(self, text: str, style: str = "") -> None:
        self.parts.append(text)
        end = self.length + len(text)
        if style:
            self.styles.append(RichSpan(self.length, end, style))
        self.length = end

    def text(self, styled: bool = True) -> Text:
        """``styled=False``: without its styles, which a console without colour would drop
        anyway (rich then has one plain text to print, not tens of thousands of pieces)."""
        return Text("".join(self.parts).rstrip("\n"), spans=self.styles if styled else None, no_wrap=True, overflow="ignore")


def _widths(columns: Sequence[Column], rows: list[list[Cell]], total: int, expand: bool) -> list[int]:
    natural = [cell_len(c.header) for c in columns]
    for row in rows:
        for i, cell in enumerate(row):
            for para in cell:
                length = sum(cell_len(text) for text, _ in para)
                if length > natural[i]:
                    natural[i] = length
    widths = list(natural)
    wrapping = [i for i, c in enumerate(columns) if c.wrap]
    if not wrapping:
        return widths
    room = total - (2 + sum(w + 2 for i, w in enumerate(widths) if i not in wrapping) + len(widths) - 1) - 2 * len(wrapping)
    if expand and any(columns[i].ratio for i in wrapping):
        # As rich shares it: each in turn takes its ratio of what is left, rounded up (padding
        # included), at least a character.
        left = room + 2 * len(wrapping)
        ratio_left = sum(columns[i].ratio for i in wrapping)
        for i in wrapping:
            ratio = columns[i].ratio
            share = max(3, -(-ratio * left // ratio_left)) if ratio_left else left
            widths[i] = share - 2
            ratio_left -= ratio
            left -= share
        return widths
    if sum(natural[i] for i in wrapping) <= room:
        return widths
    return [w - 2 for w in _collapse([w + 2 for w in widths], [c.wrap for c in columns], room + 2 * len(wrapping) + sum(
        w + 2 for i, w in enumerate(widths) if i not in wrapping))]


def _collapse(widths: list[int], wraps: list[bool], room: int) -> list[int]:
    """rich's way to narrow columns (padding included) to ``room``: the widest wrapping ones
    down to the next widest, in turn; then, if still too wide, every column evenly."""
    excess = sum(widths) - room
    while excess > 0:
        widest = max(w for w, wrap in zip(widths, wraps) if wrap)
        next_widest = max((w for w, wrap in zip(widths, wraps) if wrap and w != widest), default=0)
        if widest == next_widest or not widest:
            break
        ratios = [1 if wrap and w == widest else 0 for w, wrap in zip(widths, wraps)]
        widths = _ratio_reduce(excess, ratios, [min(excess, widest - next_widest)] * len(widths), widths)
        excess = sum(widths) - room
    if excess > 0:
        widths = _ratio_reduce(excess, [1] * len(widths), widths, widths)
    return widths


def _ratio_reduce(total: int, ratios: list[int], maximums: list[int], values: list[int]) -> list[int]:
    """rich's ``ratio_reduce``: take ``total`` from ``values`` by ``ratios``, each at most its maximum."""
    ratios = [ratio if maximum else 0 for ratio, maximum in zip(ratios, maximums)]
    ratio_left = sum(ratios)
    if not ratio_left:
        return values[:]
    left = total
    out = []
    for ratio, maximum, value in zip(ratios, maximums, values):
        if ratio and ratio_left > 0:
            taken = min(maximum, round(ratio * left / ratio_left))
            out.append(value - taken)
            left -= taken
            ratio_left -= ratio
        else:
            out.append(value)
    return out


def _add_row(out: _Builder, columns: Sequence[Column], widths: list[int], row: Sequence[Cell], bottom: bool = False) -> None:
    """One row's lines; ``bottom``: cells shorter than the row end on its last line (a header)."""
    cells = [_wrap(cell, width, column.overflow) if column.wrap else list(cell) for column, width, cell in zip(columns, widths, row)]
    height = max((len(lines) for lines in cells), default=0) or 1
    if bottom:
        cells = [[[] for _ in range(height - len(lines))] + lines for lines in cells]
    add = out.add
    for line_number in range(height):
        add(" ")
        for i, (column, width, lines) in enumerate(zip(columns, widths, cells)):
            spans = lines[line_number] if line_number < len(lines) else []
            pad = " " * max(width - sum(cell_len(text) for text, _ in spans), 0)
            add("  " if i else " ")
            if column.justify == "right":
                add(pad)
            for text, style in spans:
                add(text, style)
            if column.justify != "right":
                add(pad)
            add(" ")
        add(" \n")


def _wrap(cell: Cell, width: int, overflow: str) -> list[list[Span]]:
    """The cell's paragraphs in lines of at most ``width`` cells, broken where rich's
    ``Text.wrap`` breaks them (``_breaks``); a line still too long is cut, with an ellipsis
    where ``overflow`` asks for one."""
    width = max(width, 1)
    lines: list[list[Span]] = []
    for para in cell:
        plain = "".join(text for text, _ in para)
        breaks = _breaks(plain, width, fold=overflow == "fold")
        for start, end in zip([0, *breaks], [*breaks, len(plain)]):
            text = plain[start:end]
            if len(text) > width:  # whitespace past the width goes (rich counts characters here)
                text = text[:len(text) - min(len(text) - len(text.rstrip()), len(text) - width)]
            if cell_len(text) > width:
                text = set_cell_size(text, width - 1) + ELLIPSIS if overflow == "ellipsis" else set_cell_size(text, width)
            lines.append(_styled(para, start, text))
    return lines


def _breaks(text: str, width: int, fold: bool) -> list[int]:
    """Where rich's ``divide_line`` breaks ``text`` (offsets): before a word that does not fit
    (a word keeps the spaces after it); a word longer than a line is folded, or left to be cut."""
    breaks: list[int] = []
    offset = 0
    for match in _WORD.finditer(text):
        start, word = match.start(), match.group(0)
        length = cell_len(word.rstrip())
        if width - offset >= length:
            offset += cell_len(word)
        elif length > width:
            if fold:
                pieces = chop_cells(word, width)
                for n, piece in enumerate(pieces):
                    if start:
                        breaks.append(start)
                    if n == len(pieces) - 1:
                        offset = cell_len(piece)
                    else:
                        start += len(piece)
            else:
                if start:
                    breaks.append(start)
                offset = cell_len(word)
        elif offset and start:
            breaks.append(start)
            offset = cell_len(word)
    return breaks


def _styled(para: list[Span], start: int, text: str) -> list[Span]:
    """``text`` (a line of the paragraph, as it is shown) in the styles of the paragraph's
    characters from ``start`` on."""
    out: list[Span] = []
    position = 0  # of the span in the paragraph
    taken = 0  # characters of text placed
    for span_text, style in para:
        end = position + len(span_text)
        if end > start + taken and taken < len(text):
            count = min(end - (start + taken), len(text) - taken)
            out.append((text[taken:taken + count], style))
            taken += count
        position = end
    if taken < len(text):
        out.append((text[taken:], para[-1][1] if para else ""))
    return out
