"""The one table builder (hashbench/tables.py): the same cells in the terminal, Markdown and HTML."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from hashbench.tables import Table


def test_numbers_align_right_and_text_left_in_every_rendering():
    table = Table(["attack", "t-MAP", "note"], [["badnets", "0.900", "a|b"], ["wanet", "-", "<x>"]])
    assert table.align == ["left", "right", "left"]  # "-" (no value) does not make a column text
    assert table.to_text().splitlines() == ["attack   t-MAP  note",
                                            "-------  -----  ----",
                                            "badnets  0.900  a|b",
                                            "wanet        -  <x>"]
    assert table.to_markdown().splitlines() == ["| attack  | t-MAP | note |",
                                                "| ------- | ----: | ---- |",
                                                "| badnets | 0.900 | a\\|b |",
                                                "| wanet   |     - | <x>  |"]
    html = table.to_html()
    assert "<th class='num'>t-MAP</th>" in html and "<td class='num'>0.900</td>" in html
    assert "<td>&lt;x&gt;</td>" in html  # escaped


def test_cells_are_kept_as_formatted_and_rows_must_fit_the_headers():
    assert "0.900" in Table(["x"], [["0.900"]]).to_markdown()  # never re-parsed into 0.9
    with pytest.raises(ValueError, match="2 cells for 1 headers"):
        Table(["x"], [["1", "2"]])
    with pytest.raises(ValueError, match="2 alignments for 1 columns"):
        Table(["x"], [["1"]], ["left", "right"])


def test_a_frame_becomes_a_table_with_missing_values_empty():
    frame = pd.DataFrame({"t_map_mean": [0.123456, math.nan], "attack": ["badnets", None]})
    table = Table.from_frame(frame, float_format=".4f")
    assert table.headers == ["t_map_mean", "attack"]
    assert table.rows == [["0.1235", "badnets"], ["", ""]]
