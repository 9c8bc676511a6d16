"""A department's day, end to end: registration, storescu from the modalities, the sweep, the
quarantine with its ranked candidates, re-filing, and the statistics it leaves."""
from __future__ import annotations

import re
from datetime import timedelta

from pydicom import dcmread

from pacslite.core import audit, clock, storage
from pacslite.ris import users
from pacslite.pacs import refiling
from pacslite import create_app, sweep
from tests import simulated_day as day
from tests.conftest import csrf_token, flask_cli, login
from tests.dicomkit import store_results, storescu
from tests.server import Pacs


def test_a_simulated_day(tmp_path) -> None:
    instance = tmp_path / "instance"
    assert flask_cli(instance, "ae", "add", "STORESCU", "--host", "127.0.0.1").returncode == 0
    pacs = Pacs(instance)
    try:
        cases = day.plan()
        for case in cases:
            case.accession = pacs.register(patient_id=case.patient_id, name=case.name, sex=case.sex,
                                           birth_date=case.birth_date, station_ae="").accession_number
        files = day.images(cases, tmp_path / "sent")
        sent = storescu(pacs.port, files)
        assert set(store_results(sent.stdout + sent.stderr).values()) == {"Success"}, sent.stderr[-2000:]

        conn = pacs.conn()
        sweep.run(conn, pacs.settings, now=clock.now() + timedelta(hours=25))
        by_kind = {kind: [c for c in cases if c.kind == kind] for kind in
                   (day.CORRECT, day.ACCESSION_TYPO, day.PATIENT_ID_TYPO, day.WRONG_PATIENT, day.NEVER_SENT)}
        quarantine = {q["patient_id"] + "/" + q["accession_number"]: q
                      for q in refiling.quarantine_with_candidates(conn, pacs.settings["TIMEZONE"]) if q["kind"] == "study"}
        # every typo is in quarantine, with the right exam ranked first
        for case in by_kind[day.ACCESSION_TYPO]:
            item = quarantine[f"{case.patient_id}/{day.typo(case.accession)}"]
            assert item["reason"] == "unknown_accession"
            assert item["candidates"][0].exam["accession_number"] == case.accession
        for case in by_kind[day.PATIENT_ID_TYPO]:
            item = quarantine[f"{day.typo(case.patient_id, -1)}/{case.accession}"]
            assert item["reason"] == "patient_id_mismatch"
            assert item["candidates"][0].exam["accession_number"] == case.accession
        # every wrong-patient case is flagged as a possible wrong patient
        for case in by_kind[day.WRONG_PATIENT]:
            assert quarantine[f"{case.patient_id}/{case.accession}"]["reason"] == "demographics_mismatch"
        assert len(quarantine) == 7
        # every never-sent exam has its missing-images alert
        missing = {a["accession_number"] for a in sweep.list_alerts(conn, rule="missing_images")}
        assert {c.accession for c in by_kind[day.NEVER_SENT]} <= missing
        assert not {c.accession for c in by_kind[day.CORRECT]} & missing
        conn.close()

        # the admin re-files through the pages; a technologist may not
        app = create_app({"INSTANCE_DIR": str(instance), "DEFAULT_LANGUAGE": "en"})
        conn = pacs.conn()
        for name, role in (("pacs_admin", "admin"), ("tech_zhou", "technologist")):
            users.create(conn, audit.SYSTEM, {"username": name, "password": "Secret-pass-1", "roles": [role]})
        admin, tech = app.test_client(), app.test_client()
        login(admin, "pacs_admin", "Secret-pass-1")
        login(tech, "tech_zhou", "Secret-pass-1")
        first = next(iter(quarantine.values()))
        refused = tech.post(f"/studies/{first['id']}/refile", data={
            "csrf_token": csrf_token(tech, "/exams"), "accession_number": "x", "reason": "x"})
        assert refused.status_code == 403
        assert conn.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'access.denied'"
                            " AND actor = 'tech_zhou'").fetchone()[0] == 1
        targets = {f"{c.patient_id}/{day.typo(c.accession)}": c.accession for c in by_kind[day.ACCESSION_TYPO]}
        targets |= {f"{day.typo(c.patient_id, -1)}/{c.accession}": c.accession for c in by_kind[day.PATIENT_ID_TYPO]}
        targets |= {f"{c.patient_id}/{c.accession}": day.other_patient(cases, c).accession
                    for c in by_kind[day.WRONG_PATIENT]}
        token = csrf_token(admin, "/exams")
        for key, accession in targets.items():
            done = admin.post(f"/studies/{quarantine[key]['id']}/refile", data={
                "csrf_token": token, "accession_number": accession, "reason": "Corrected after the day's check"})
            assert done.status_code == 302, done.get_data(as_text=True)
        assert refiling.quarantine_with_candidates(conn, pacs.settings["TIMEZONE"]) == []
        study = quarantine[next(iter(targets))]
        ds = dcmread(storage.resolve(pacs.settings["STORAGE_DIR"],
                                     refiling.instances_of_study(conn, study["id"])[0]["storage_path"]))
        assert ds.OriginalAttributesSequence[0].ModifiedAttributesSequence[0].AccessionNumber == \
            study["accession_number"]

        # 37 image sets arrived: 30 filed on arrival, 7 re-filed; 3 exams never sent, and the
        # 2 wrong-patient exams are left without images
        page = admin.get("/statistics").get_data(as_text=True)
        figure = {key: re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", re.search(rf'id="{key}">(.*?)</dd>', page,
                                                                               re.S).group(1))).strip()
                  for key in ("auto-rate", "refile-rate", "final-rate", "missing", "refiled-by-reason",
                              "misfiles-found")}
        assert figure["auto-rate"] == "81.08% (30)"
        assert figure["refile-rate"].startswith("7 image sets, 18.92%; 7 exams")
        assert figure["final-rate"] == "100.00%"
        assert figure["missing"] == "5"
        assert figure["refiled-by-reason"] == ("Unknown accession number: 3Patient ID does not match the exam: 2"
                                               "Demographics do not match the patient (possible wrong patient): 2")
        assert figure["misfiles-found"] == "0"
        csv = admin.get("/statistics.csv").get_data(as_text=True)
        assert csv.splitlines()[1].startswith("all,all,40,0,35,74,5,30,7,0.8108,7,0.2,")  # 2 exams got 2 studies
        # re-filed by reason (no accession, unknown accession, patient ID, demographics, cancelled,
        # after filing), misfiles found after filing, received, quarantined on arrival, still there, final rate
        assert csv.splitlines()[1].endswith(",0,3,2,2,0,0,0,37,7,0,1.0")
        conn.close()
    finally:
        pacs.server.stop()
