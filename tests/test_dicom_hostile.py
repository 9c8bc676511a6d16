"""Hostile DICOM peers against the real process (issue 13): each case replays what an attacker
or a broken modality did, with raw sockets (tests/hostile.py) or pynetdicom, on loopback, and
checks that pacslite neither froze, filled up, nor acknowledged what it cannot read back."""
from __future__ import annotations

import threading
import urllib.request

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from tests import server as pacs_server
from tests.conftest import flask_cli

CALLERS = ("HOSTILE", "FINDSCU", "STORESCU")


@pytest.fixture(scope="module")
def pacs(tmp_path_factory) -> pacs_server.Pacs:
    instance = tmp_path_factory.mktemp("hostile")
    for title in CALLERS:
        added = flask_cli(instance, "ae", "add", title, "--host", "127.0.0.1")
        assert added.returncode == 0, added.stderr
    running = pacs_server.Pacs(instance)
    yield running
    assert running.server.stop() == 0


def worklist_find(port: int, name: str, timeout: float = 10) -> list[int]:
    """A worklist C-FIND on PatientName; the statuses of every response (pending ones included)."""
    ae = AE(ae_title="FINDSCU")
    ae.dimse_timeout = ae.acse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSLITE")
    assert assoc.is_established
    identifier = Dataset()
    identifier.PatientName = name
    identifier.PatientID = ""
    try:
        return [int(status.Status) if status else -1
                for status, _ in assoc.send_c_find(identifier, ModalityWorklistInformationFind)]
    finally:
        assoc.release()


def login_page(pacs: pacs_server.Pacs) -> int:
    with urllib.request.urlopen(pacs.server.url + "/login", timeout=10) as response:
        return response.status


def test_a_pathological_wildcard_answers_at_once_and_the_pages_stay_responsive(pacs) -> None:
    """Case 1: ``****…#`` made the backtracking regex run for minutes while holding the GIL."""
    pacs.register(patient_id="WILD01", name="张三", station_ae="")
    hostile = "*" * 60 + "#"
    statuses: list[list[int]] = []
    worker = threading.Thread(target=lambda: statuses.extend(worklist_find(pacs.port, hostile) for _ in range(5)))
    worker.start()
    pages = [login_page(pacs) for _ in range(5)]  # while the queries run
    worker.join(timeout=60)
    assert not worker.is_alive(), "the hostile worklist queries did not finish"
    assert pages == [200] * 5
    assert statuses == [[0x0000]] * 5  # no match, and a final success: answered, not timed out
    # wildcards still match as they should
    assert worklist_find(pacs.port, "Z*A*N*G*^*S*?N") == [0xFF00, 0x0000]
    assert worklist_find(pacs.port, "*?" * 40) == [0x0000]  # longer than any name: no match
    assert worklist_find(pacs.port, "*" * 2000) == [0xA900]  # absurdly long: refused, not searched
