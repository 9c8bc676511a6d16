"""The shape of the code (docs/architecture.md), kept by a test.

The floors are folders: ``core`` ← ``ris`` ← ``pacs`` ← the top-level modules ← the adapters
(``dicom``, ``hl7``, ``web``). Imports point down (or sideways within a floor), the adapters do
not import each other, ``core`` never imports Flask or pynetdicom and the domain floors neither,
and the module graph has no cycle. Each table has one writing module, the one the architecture
document names. The checks read the source with :mod:`ast`, so a planted bad import fails them
(the tests at the end plant one in a copy of the package).
"""
from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "pacslite"
ARCHITECTURE = ROOT / "docs" / "architecture.md"

#: The floors, lowest first; a module may import its own floor and the floors below.
FLOORS = ("core", "ris", "pacs", "top", "adapter")
ADAPTERS = ("dicom", "hl7", "web")
#: The only modules beside the floors' folders (``pacslite`` itself builds the app: it may
#: import the adapters it wires together).
TOP_LEVEL = {"pacslite", "pacslite.cli", "pacslite.sweep", "pacslite.statistics", "pacslite.ohif"}
#: Third-party packages a floor may not import.
FORBIDDEN = {
    "core": ("flask", "flask_babel", "flask_login", "flask_wtf", "pynetdicom", "hl7", "hl7apy"),
    "ris": ("flask", "flask_babel", "flask_login", "flask_wtf", "pynetdicom", "hl7", "hl7apy"),
    "pacs": ("flask", "flask_babel", "flask_login", "flask_wtf", "pynetdicom", "hl7", "hl7apy"),
    "dicom": ("flask", "flask_babel", "flask_login", "flask_wtf", "hl7", "hl7apy"),
    "hl7": ("flask", "flask_babel", "flask_login", "flask_wtf", "pynetdicom"),
    "web": ("pynetdicom", "hl7", "hl7apy"),
}
WRITE = re.compile(r"\b(?:INSERT(?:\s+OR\s+\w+)?\s+INTO|REPLACE\s+INTO|UPDATE|DELETE\s+FROM)\s+([a-z_]+)", re.I)


def modules(package: Path) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> tuple[set[str], set[str]]:
    """(pacslite modules, other top-level packages) that the module imports, lazily or not."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    inside, outside = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                (inside if alias.name.split(".")[0] == "pacslite" else outside).add(
                    alias.name if alias.name.split(".")[0] == "pacslite" else alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "pacslite":
                outside.add(source.split(".")[0])
                continue
            for alias in node.names:  # `from pkg import module` imports the module, not pkg
                inside.add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source)
    inside.discard(name)
    return {m for m in inside if m in known}, outside


def floor_of(name: str) -> str:
    parts = name.split(".")
    if len(parts) > 1 and parts[1] in ("core", "ris", "pacs"):
        return parts[1]
    if len(parts) > 1 and parts[1] in ADAPTERS:
        return "adapter"
    return "top"


def graph(package: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    known = modules(package)
    inside, outside = {}, {}
    for name, path in known.items():
        inside[name], outside[name] = imports_of(name, path, known)
    return inside, outside


def layer_violations(package: Path) -> list[str]:
    """Every import that runs against the floors, and every cycle."""
    inside, outside = graph(package)
    found = []
    for name, targets in sorted(inside.items()):
        floor = floor_of(name)
        own = name.split(".")[1] if "." in name else ""
        for target in sorted(targets):
            if name == "pacslite":
                continue  # the application factory wires every floor and adapter together
            target_floor = floor_of(target)
            if FLOORS.index(target_floor) > FLOORS.index(floor):
                found.append(f"{name} ({floor}) imports {target} ({target_floor}): upward")
            elif floor == "adapter" and target_floor == "adapter" and target.split(".")[1] != own:
                found.append(f"{name} imports {target}: adapters do not import each other")
        key = own if own in FORBIDDEN else floor
        for third in sorted(outside[name] & set(FORBIDDEN.get(key, ()))):
            found.append(f"{name} ({key}) imports {third}")
    found += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(inside)]
    return found


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component) + [sorted(component)[0]])

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_imports_point_down_without_cycles() -> None:
    assert layer_violations(PACKAGE) == []


def test_no_module_outside_the_floors() -> None:
    known = modules(PACKAGE)
    loose = {name for name in known if name.count(".") == 1 and not known[name].name == "__init__.py"}
    loose |= {"pacslite"}
    assert loose == TOP_LEVEL
    folders = {name.split(".")[1] for name in known if name.count(".") >= 1 and known[name].name == "__init__.py"}
    assert folders <= {"core", "ris", "pacs", *ADAPTERS}


# ---------------------------------------------------------------- a planted bad import fails

def _copy(tmp_path: Path) -> Path:
    copy = tmp_path / "pacslite"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("static", "translations", "migrations",
                                                                  "__pycache__"))
    return copy


def _plant(module: Path, line: str) -> None:
    module.write_text(module.read_text(encoding="utf-8") + f"\n\ndef _planted():\n    {line}\n", encoding="utf-8")


@pytest.mark.parametrize(("module", "line", "expected"), [
    ("core/clock.py", "from ..ris import exams", "pacslite.core.clock (core) imports pacslite.ris.exams (ris): upward"),
    ("core/db.py", "from flask import g", "pacslite.core.db (core) imports flask"),
    ("ris/reports.py", "from ..pacs import index", "pacslite.ris.reports (ris) imports pacslite.pacs.index (pacs): upward"),
    ("dicom/handlers.py", "from ..web import access", "pacslite.dicom.handlers imports pacslite.web.access: adapters"),
    ("web/labels.py", "import pynetdicom", "pacslite.web.labels (web) imports pynetdicom"),
    ("core/audit.py", "from . import jobs", "import cycle: pacslite.core.audit -> pacslite.core.jobs"),
])
def test_a_planted_bad_import_is_caught(tmp_path, module: str, line: str, expected: str) -> None:
    copy = _copy(tmp_path)
    assert layer_violations(copy) == []
    _plant(copy / module, line)
    found = layer_violations(copy)
    assert any(v.startswith(expected) for v in found), found


# ---------------------------------------------------------------- one writer per table

def documented_writers() -> dict[str, str]:
    """The table of writers in docs/architecture.md: table -> module (dotted, under pacslite)."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    block = text.split("<!-- table-writers:start -->")[1].split("<!-- table-writers:end -->")[0]
    rows = [line for line in block.strip().splitlines() if line.startswith("|")][2:]
    writers = {}
    for row in rows:
        table, module = (cell.strip().strip("`") for cell in row.strip("|").split("|")[:2])
        writers[table] = module
    return writers


def _sql_strings(path: Path) -> list[str]:
    """The string literals of a module that are not docstrings (f-strings' literal parts joined)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            found.append("".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            found.append(node.value)
    return found


def actual_writers(package: Path, tables: set[str]) -> dict[str, set[str]]:
    writers: dict[str, set[str]] = {}
    for name, path in modules(package).items():
        for literal in _sql_strings(path):
            for table in WRITE.findall(literal):
                if table.lower() in tables:
                    writers.setdefault(table.lower(), set()).add(name.removeprefix("pacslite."))
    return writers


def schema_tables(tmp_path: Path) -> set[str]:
    from pacslite.core import db
    conn = db.connect(tmp_path / "schema.db")
    db.migrate(conn)
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    return tables


def test_each_table_has_one_writing_module_the_documented_one(tmp_path) -> None:
    tables = schema_tables(tmp_path)
    documented = documented_writers()
    assert set(documented) == tables, "every table, and only tables, in docs/architecture.md"
    for table, writers in sorted(actual_writers(PACKAGE, tables).items()):
        assert writers == {documented[table]}, f"{table} is written by {sorted(writers)}"


def test_a_second_writer_is_caught(tmp_path) -> None:
    copy = _copy(tmp_path)
    _plant(copy / "ris" / "reports.py", 'conn.execute("UPDATE exams SET status = \'final\'")')
    writers = actual_writers(copy, schema_tables(tmp_path))
    assert writers["exams"] == {"ris.exams", "ris.reports"}


def test_adding_an_alert_rule_or_a_job_kind_needs_no_migration(tmp_path, monkeypatch) -> None:
    """A rule registered in code is raised on a database with every migration applied; one that
    nobody registered is refused before anything is written."""
    from pacslite.core import alerts, audit, db, jobs
    monkeypatch.setattr(alerts, "_RULES", dict(alerts._RULES))  # the registries as they were, after
    monkeypatch.setattr(jobs, "_STEPS", dict(jobs._STEPS))
    conn = db.connect(tmp_path / "rules.db")
    db.migrate(conn)
    rule = alerts.register("a_rule_added_later")
    assert rule in alerts.rules()
    assert alerts.raise_alert(conn, rule, "exam:1", "2026-12-04T00:00:00Z", {"why": "test"})
    assert alerts.live_state(conn, rule, "exam:1") == alerts.OPEN
    with pytest.raises(ValueError):
        alerts.raise_alert(conn, "nobody_registered_this", "exam:1", "2026-12-04T00:00:00Z", {})
    jobs.register("a_kind_added_later")(lambda conn, settings, job: jobs.Step(1, 1, "", finished=True))
    job_id = jobs.start(conn, audit.SYSTEM, "a_kind_added_later", "x")
    assert jobs.run_until_idle(conn, {}) == 1
    assert jobs.get(conn, job_id)["state"] == jobs.DONE
    with pytest.raises(ValueError):
        jobs.start(conn, audit.SYSTEM, "nobody_registered_this")
    assert conn.execute("SELECT COUNT(*) FROM alerts WHERE rule = 'nobody_registered_this'").fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM jobs WHERE kind = 'nobody_registered_this'").fetchone()[0] == 0
    conn.close()
