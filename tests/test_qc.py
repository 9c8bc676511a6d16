"""Report quality control (报告质控, issue 32): a QC reviewer samples a month's final reports (N
per radiologist at random, every critical one), scores them against the checklist with a
comment; nobody scores their own; only QC reviewers do it; scores per radiologist."""
from __future__ import annotations

import pytest

from pacslite.core import audit, clock
from pacslite.core.validation import Conflict, ValidationError
from pacslite.ris import patients, qc, reports, users
from tests.conftest import make_user
from tests.test_reports import add_image, register


def signed(app, conn, tmp_path, author: str, result_class: str = "normal") -> str:
    accession = register(app, conn)
    add_image(app, conn, tmp_path, accession)
    reports.sign(conn, audit.Actor(author), patients.get_exam(conn, accession),
                 {"findings": "f", "impression": "i", "result_class": result_class, "level": "final",
                  "revision": "0"}, app.config)
    return accession


def test_sampling_scoring_and_the_authors_comment(app, conn, tmp_path) -> None:
    for name in ("dr_a", "dr_b"):
        make_user(conn, name, "radiologist")
    reviewer = make_user(conn, "qc_li", "radiologist")
    users.update(conn, audit.SYSTEM, reviewer.id, {"display_name": "QC", "roles": ["radiologist"], "active": True,
                                                  "can_qc": True})
    made = [signed(app, conn, tmp_path, "dr_a") for _ in range(3)] + [signed(app, conn, tmp_path, "dr_b")]
    critical = signed(app, conn, tmp_path, "dr_b", "critical")
    month = clock.local_today(app.config["TIMEZONE"]).isoformat()[:7]
    with pytest.raises(Conflict):  # not a QC reviewer
        qc.sample(conn, audit.Actor("dr_a"), app.config, month, 1)
    with pytest.raises(ValidationError):
        qc.sample(conn, audit.Actor("qc_li"), app.config, "2026-13", 1)
    assert qc.sample(conn, audit.Actor("qc_li"), app.config, month, 1) == {"sample": 2, "critical": 1}
    rows = qc.of_month(conn, month)
    assert sorted(r["author"] for r in rows) == ["dr_a", "dr_b", "dr_b"]
    assert [r["accession_number"] for r in rows if r["why"] == "critical"] == [critical]
    assert qc.sample(conn, audit.Actor("qc_li"), app.config, month, 1) == {"sample": 1, "critical": 0}  # one more of dr_a's
    assert qc.sample(conn, audit.Actor("qc_li"), app.config, month, 5) == {"sample": 1, "critical": 0}  # dr_a's last
    first = next(r for r in qc.of_month(conn, month) if r["author"] == "dr_a")
    with pytest.raises(ValidationError):
        qc.score(conn, audit.Actor("qc_li"), first["id"], {"description": "2"})  # the conclusion is required
    qc.score(conn, audit.Actor("qc_li"), first["id"], {"description": "2", "conclusion": "1", "comment": "结论欠具体"})
    shown = qc.of_exam(conn, first["exam_ref"])
    assert [(r["score"], r["comment"], r["scored_by"]) for r in shown] == [(3, "结论欠具体", "qc_li")]
    assert qc.scores_by_radiologist(conn, month, month) == {"dr_a": {"scored": 1, "share": 0.75}}
    make_user(conn, "qc_self", "radiologist")
    self_id = users.by_username(conn, "qc_self").id
    users.update(conn, audit.SYSTEM, self_id, {"display_name": "S", "roles": ["radiologist"], "active": True,
                                               "can_qc": True})
    mine = signed(app, conn, tmp_path, "qc_self")
    qc.sample(conn, audit.Actor("qc_li"), app.config, month, 1)
    own = next(r for r in qc.of_month(conn, month) if r["accession_number"] == mine)
    with pytest.raises(Conflict):
        qc.score(conn, audit.Actor("qc_self"), own["id"], {"description": "2", "conclusion": "2"})
    assert len(made) == 4


def test_the_qc_pages_and_the_author_sees_the_comment(app, conn, client_as, tmp_path) -> None:
    from tests.conftest import post
    author = client_as("radiologist", username="dr_a")
    make_user(conn, "qc_li", "radiologist")
    users.update(conn, audit.SYSTEM, users.by_username(conn, "qc_li").id,
                 {"display_name": "QC", "roles": ["radiologist"], "active": True, "can_qc": True})
    reviewer = client_as("radiologist", username="qc_li")
    accession = signed(app, conn, tmp_path, "dr_a")
    assert author.get("/qc").status_code == 409  # a radiologist, not a QC reviewer
    month = clock.local_today(app.config["TIMEZONE"]).isoformat()[:7]
    assert post(reviewer, "/qc", {"month": month, "per_radiologist": "x"}).status_code == 400
    assert post(reviewer, "/qc", {"month": month, "per_radiologist": "2"}).status_code == 302
    page = reviewer.get(f"/qc?month={month}").get_data(as_text=True)
    assert accession in page and 'id="nav-qc"' in page
    qc_id = qc.of_month(conn, month)[0]["id"]
    assert post(reviewer, f"/qc/{qc_id}", {"description": "2"}).status_code == 400
    assert post(reviewer, f"/qc/{qc_id}", {"description": "1", "conclusion": "2", "agreement": "",
                                            "comment": "描述可更详细"}).status_code == 302
    shown = author.get(f"/exams/{accession}/report").get_data(as_text=True)
    assert 'id="qc-reviews"' in shown and "描述可更详细" in shown and "score 3" in shown
    # the statistics: the QC score beside the share within the target
    work = client_as("admin").get("/statistics/workload", headers={"HX-Request": "true"}).get_data(as_text=True)
    row = work.split('id="work-radiologists"')[1].split("</table>")[0]
    assert "75" in row and "(1)" in row
    exported = client_as("admin").get("/statistics/quality.csv").get_data(as_text=True)
    assert "radiologists,dr_a,1," in exported and exported.strip().endswith(",1,0.75")
