"""Hardening of the pages, the API and the audit chain against hostile input (issue 13)."""
from __future__ import annotations

import csv
import io

from tests.conftest import register


def test_csv_cells_that_look_like_formulas_are_neutralised(client_as) -> None:
    desk = client_as("registrar")
    register(desk, station_ae='=HYPERLINK("x")')
    register(desk, station_ae="@SUM(A1)", patient_id="P0002", name="李四")
    register(desk, station_ae="-2+3", patient_id="P0003", name="王五")
    text = client_as("admin").get("/statistics.csv").get_data(as_text=True).lstrip("\ufeff")
    rows = list(csv.reader(io.StringIO(text)))
    stations = {row[1] for row in rows if row[0] == "station"}
    assert stations == {"'=HYPERLINK(\"x\")", "'@SUM(A1)", "'-2+3"}, stations
    assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for row in rows for cell in row), rows
    assert rows[1][:3] == ["all", "all", "3"]  # numbers stay numbers
