"""The hand-made table layout (``report/grid.py``) against rich's own ``Table``: the same
text and the same styles, character for character, for any cells at the widths each layout is
used at. (Two of rich's quirks are not copied: a line holding wide characters that fits is
still cut with an ellipsis, and columns squeezed to nothing are left out.)"""

from __future__ import annotations

import io
import random

import pytest
from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from analyzer.report.grid import Column, paragraph, print_table

WORDS = ["a", "to", "the", "smtp", "session", "completed;", "52.96.69.29:587", "→", "[MS]", "550", "5.7.64",
         "ch3pepf00000015.mail.protection.outlook.com", "TenantAttribution;", "x" * 45]
WIDE_WORDS = ["日本語", "メール送信", "mx.例え.jp"]
STYLES = ["", "", "bold", "red", "dim", "blue", "bold magenta"]


def _random_cell(rng: random.Random, paragraphs: int, words=WORDS) -> list[list[tuple[str, str]]]:
    cell = []
    for _ in range(paragraphs):
        spans = []
        for n in range(rng.randint(1, 4)):
            words = " ".join(rng.choice(words) for _ in range(rng.randint(1, 5)))
            spans.append(((" " if n else "") + words, rng.choice(STYLES)))
        cell.append(paragraph(*spans))
    return cell


def _rich_text(cell) -> Text:
    text = Text()
    for n, para in enumerate(cell):
        if n:
            text.append("\n")
        for span, style in para:
            text.append(span, style or None)
    return text


def _rendered(width: int, draw) -> list[tuple[str, str]]:
    console = Console(width=width, record=True, file=io.StringIO(), color_system="truecolor", force_terminal=True)
    draw(console)
    return [(char, str(seg.style) if seg.style and char != " " else "") for seg in console._record_buffer for char in seg.text]


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("expand", [False, True])
def test_the_same_table_as_rich_draws(seed, expand):
    rng = random.Random(seed)
    if expand:  # the narrow sessions table: a number, then columns sharing the width by ratio
        columns = [Column("#", justify="right", wrap=False), Column("session", ratio=2, overflow="ellipsis"),
                   Column("outcome and verdict", ratio=3, overflow="ellipsis")]
    else:  # the wide one: columns that never wrap, others folded to fit
        columns = [Column("#", justify="right", wrap=False), Column("start (UTC)", wrap=False), Column("client → server"),
                   Column("conn", wrap=False), Column("verdict"), Column("detail")]
    rows = []
    for index in range(rng.randint(1, 8)):
        row = []
        for column in columns:
            if column.header == "#":
                row.append([[(str(index * rng.choice((1, 7, 130))), "")]])
            elif not column.wrap:
                row.append([[(rng.choice(["07:25:49.484", "SF ShAdDafF", "S0 S", "REJ Sr"]), rng.choice(STYLES))]])
            else:
                row.append(_random_cell(rng, rng.randint(1, 3)))
        rows.append(row)

    def ours(console):
        print_table(console, columns, rows, expand=expand, lines_between=expand)

    def theirs(console):
        table = Table(box=box.SIMPLE_HEAD, show_lines=expand, header_style="bold", expand=expand)
        for column in columns:
            table.add_column(column.header, justify=column.justify, no_wrap=not column.wrap, ratio=column.ratio or None,
                             overflow=column.overflow)
        for row in rows:
            table.add_row(*(_rich_text(cell) for cell in row))
        console.print(table)

    for width in (40, 44, 60, 80, 100, 119) if expand else (100, 119, 120, 140, 200, 250):
        assert _rendered(width, ours) == _rendered(width, theirs), width


def test_a_console_without_colour_gets_the_same_text_without_styles():
    rows = [[[[("0", "")]], [paragraph(("10.0.0.1:25 →", "bold"), " mx [MS]")]]]
    columns = [Column("#", justify="right", wrap=False), Column("session")]
    plain, coloured = io.StringIO(), io.StringIO()
    print_table(Console(width=40, file=plain, color_system=None), columns, rows)
    print_table(Console(width=40, file=coloured, color_system="standard", force_terminal=True), columns, rows)
    assert "\x1b" not in plain.getvalue() and "\x1b[1m" in coloured.getvalue()
    assert plain.getvalue() == Text.from_ansi(coloured.getvalue()).plain + "\n" or plain.getvalue().rstrip() == Text.from_ansi(coloured.getvalue()).plain.rstrip()


@pytest.mark.parametrize("seed", range(6))
def test_wide_characters_stay_whole_and_inside_the_columns(seed):
    rng = random.Random(seed)
    columns = [Column("#", justify="right", wrap=False), Column("session", ratio=2, overflow="ellipsis"),
               Column("outcome and verdict", ratio=3)]
    rows = [[[[(str(n), "")]], _random_cell(rng, 2, WORDS + WIDE_WORDS), _random_cell(rng, 2, WORDS + WIDE_WORDS)] for n in range(5)]
    for width in (30, 41, 60, 97):
        out = io.StringIO()
        print_table(Console(width=width, file=out, color_system=None), columns, rows, expand=True)
        lines = out.getvalue().splitlines()
        assert all(cell_len(line) <= width for line in lines), width
        text = out.getvalue()
        for word in ("日本語", "メール送信"):  # folded or cut short, never split inside a character
            assert word in text or word[:2] in text or "…" in text
