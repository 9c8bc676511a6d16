"""C-MOVE (issue 14) with DCMTK's movescu as the workstation and storescp as the destination,
all in a private network namespace (tests/retrieve_scenario.py): images arrive byte for byte
as stored, decompressed for a destination that takes only uncompressed ones, never a
quarantined study, never to an unknown destination, and every transfer is audited."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def in_namespace(tmp_path, *args: str) -> dict:
    """Run tests/retrieve_scenario.py in a private network namespace; what it printed."""
    script = (f'ip link set lo up && PACSLITE_TEST_POSTGRESQL_VIA_SOCKET=1 exec "{sys.executable}"'
              f' -m tests.retrieve_scenario "{tmp_path}" {" ".join(args)}')
    done = subprocess.run(["unshare", "--net", "--map-root-user", "sh", "-c", script], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_workstation_moves_a_study_byte_identical_to_a_destination(tmp_path) -> None:
    result = in_namespace(tmp_path)
    assert result["moved_all"] == 0 and result["moved_plain"] == 0, result["moved_all_log"]
    stored = set(result["stored"])
    assert len(stored) == 4
    # a destination that takes every syntax gets each image exactly as stored
    assert set(result["received"]["all"]) == stored
    assert all(image["identical"] for image in result["received"]["all"].values()), result["received"]["all"]
    # one that takes only uncompressed images gets the RLE one decompressed, the others as stored
    plain = result["received"]["plain"]
    assert set(plain) == stored
    assert plain[result["rle"]]["syntax"] in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
    assert not plain[result["rle"]]["identical"]
    assert all(image["identical"] for uid, image in plain.items() if uid != result["rle"])
    # an unknown destination, and a quarantined study
    assert "Received Final Move Response (Refused: MoveDestinationUnknown)" in result["unknown"], result["unknown"]
    # (the quarantined study was moved to DEST_ALL last: what it received is exactly the filed study)
    assert "Received Final Move Response (Success)" in result["quarantined"], result["quarantined"]
    # audited: per study, who, where to, the patient, how many
    sent = [a for a in result["audits"] if a["outcome"] == "success"]
    assert len(sent) == 2 and {a["patient_id"] for a in sent} == {"MOVE01"}
    assert {json.loads(a["detail"])["destination"] for a in sent} == {"DEST_ALL", "DEST_PLAIN"}
    assert all(json.loads(a["detail"])["images"] == 4 and a["actor"] == "ae:WORKSTATION" for a in sent)


def test_forward_rules_deliver_and_a_destination_that_was_down_gets_the_study_later(tmp_path) -> None:
    """Routing (issue 14): every CT to DEST_NOW at once; everything from STORESCU to DEST_LATER,
    which is down, retried, delivered once it is up, across a restart; "Send to…" by hand."""
    result = in_namespace(tmp_path, "routing")
    assert result["now_sent"] and result["later_retrying"] and result["later_sent"], result
    assert result["later_before"][-1][0] == "queued" and result["later_before"][-1][1] >= 2  # retried, not given up
    # the study goes once both images are in (a second time if one arrived while it was being sent)
    assert result["queue"]["DEST_NOW"][-1] == ["sent", 1, 2] and len(result["queue"]["DEST_NOW"]) <= 2
    assert result["queue"]["DEST_LATER"][-1][0] == "sent" and result["queue"]["DEST_LATER"][-1][2] == 2
    assert result["received"]["later"] == [True, True]  # byte for byte as stored
    assert result["received"]["now"] == [True, True]
    assert result["page_shows_queue"] and result["send_status"] == 302 and result["send_delivered"]
    audits = [tuple(a) for a in result["audits"]]
    assert audits.count(("forward.send", "tech_fwd", "success")) == 1
    transfers = [a for a in audits if a[0] == "image.transfer"]
    rule_sends = len(result["queue"]["DEST_NOW"])  # one transfer audited per send, so one or two
    assert sorted(a for a in transfers if a[2] == "success") == \
        [("image.transfer", "forward-rule:1", "success")] * rule_sends + [("image.transfer", "forward-rule:2", "success"),
                                                                         ("image.transfer", "user:tech_fwd", "success")]
    assert len([a for a in transfers if a[2] == "failure"]) >= 2  # each failed attempt to DEST_LATER


def test_orthanc_finds_the_patient_by_name_and_retrieves_the_study(tmp_path) -> None:
    """Orthanc (Debian's) as a Q/R SCU through its REST API: C-FIND by ideographs and by
    pinyin, C-MOVE to itself, never the quarantined study."""
    result = in_namespace(tmp_path, "orthanc")
    for name in ("张*", "ZHANG*"):
        assert len(result["found"][name]) == 1, result["found"]
        assert result["found"][name][0][0] in ("ZHANG^SAN=张^三", "ZHANG^SAN") and result["found"][name][0][1]
    assert result["quarantined_answers"] == 0
    assert sorted(result["received"]) == result["sent"]
    assert all(result["received"].values()), result["received"]  # as stored, byte for byte


def test_orthanc_queries_and_retrieves_over_dicom_tls_both_ways(tmp_path) -> None:
    """Issue 27: Orthanc's DICOM TLS client and server against pacslite's TLS port and its TLS
    sender, each checking the other's certificate; the plain port refuses the AE that pinned one."""
    result = in_namespace(tmp_path, "orthanc_tls")
    assert result["found"] == 1
    assert result["received"] == result["sent"] and len(result["sent"]) == 2
    assert result["plain_echo"] != "answered" and ("ORTHANC", "tls_required") in map(tuple, result["refusals"])
