"""The department's day in Chromium (issue 31): booked at the desk, checked in, called on the
waiting-room screen, the exam, films printed to a real print SCP (DCMTK's dcmprscp, its image
boxes checked), the final report signed and printed by the patient at the kiosk. The walk is
tests/day_scenario.py, run in a private network namespace (dcmprscp listens on every address)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.browser


def test_a_patients_day_from_booking_to_the_report_printed_at_the_kiosk(tmp_path) -> None:
    script = (f'ip link set lo up && PACSLITE_TEST_POSTGRESQL_VIA_SOCKET=1 exec "{sys.executable}"'
              f' -m tests.day_scenario "{tmp_path}"')
    done = subprocess.run(["unshare", "--net", "--map-root-user", "sh", "-c", script], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-5000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["films"] == 2 and result["image_boxes"] == 5
