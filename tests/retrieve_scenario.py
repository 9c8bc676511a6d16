"""C-MOVE with real DCMTK peers, run inside a private network namespace (storescp cannot be
told to listen on loopback only): pacslite, two storescp destinations and the workstation's
movescu all live there. Run by tests/test_retrieve.py as

    unshare --net --map-root-user sh -c 'ip link set lo up && exec python -m tests.retrieve_scenario WORKDIR'

and prints one JSON line of what happened, for the test to check."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import RLELossless

from pacslite.core import storage
from tests import server as pacs_server
from tests.conftest import flask_cli, free_port
from tests.dicomkit import (dataset_bytes, echoscu, make_ct, propose_option, run, self_signed_certificate,
                            store_results, storescu)


def start_storescp(aet: str, port: int, folder: Path, *options: str) -> subprocess.Popen:
    folder.mkdir(parents=True)
    process = subprocess.Popen(["storescp", "+B", *options, "-aet", aet, "-od", str(folder), "-fe", ".dcm", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while echoscu(port, aet="PACSLITE", aec=aet).returncode != 0:
        if time.monotonic() > deadline or process.poll() is not None:
            raise SystemExit(f"storescp {aet} did not start")
        time.sleep(0.05)
    return process


def movescu(port: int, destination: str, *keys: str) -> subprocess.CompletedProcess:
    args = ["movescu", "-v", "-S", "-aet", "WORKSTATION", "-aec", "PACSLITE", "-aem", destination]
    for key in keys:
        args += ["-k", key]
    return run([*args, "127.0.0.1", str(port)])


def main(work: Path) -> dict:
    instance = work / "instance"
    all_port, plain_port = free_port(), free_port()
    for args in (["WORKSTATION", "--may", "query,retrieve"], ["STORESCU"],
                 ["DEST_ALL", "--host", "127.0.0.1", "--port", str(all_port), "--may", ""],
                 ["DEST_PLAIN", "--host", "127.0.0.1", "--port", str(plain_port), "--may", ""]):
        added = flask_cli(instance, "ae", "add", *args)
        assert added.returncode == 0, added.stderr
    pacs = pacs_server.Pacs(instance)
    destinations = [start_storescp("DEST_ALL", all_port, work / "all", "+xa"),
                    start_storescp("DEST_PLAIN", plain_port, work / "plain")]
    try:
        reg = pacs.register(patient_id="MOVE01", name="张三", sex="M", birth_date="1980-02-03", station_ae="")
        files = pacs.send_series(work / "sent", 3, accession=reg.accession_number, patient_id="MOVE01",
                                 name="ZHANG^SAN", sex="M", birth_date="19800203")
        study_uid = dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
        rle = make_ct(work / "rle.dcm", study_uid=study_uid, accession=reg.accession_number, patient_id="MOVE01",
                      name="ZHANG^SAN", sex="M", birth_date="19800203", instance_number=4)
        rle.compress(RLELossless, generate_instance_uid=False)
        rle.save_as(work / "rle.dcm", enforce_file_format=True)
        sent = storescu(pacs.port, [work / "rle.dcm"], extra=propose_option(work / "rle.dcm"))
        assert list(store_results(sent.stdout + sent.stderr).values()) == ["Success"], sent.stderr
        stray = make_ct(work / "stray.dcm", accession="NOSUCH", patient_id="MOVE01", name="ZHANG^SAN")
        storescu(pacs.port, [work / "stray.dcm"])

        moved_all = movescu(pacs.port, "DEST_ALL", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study_uid}")
        moved_plain = movescu(pacs.port, "DEST_PLAIN", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study_uid}")
        unknown = movescu(pacs.port, "NOWHERE", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study_uid}")
        quarantined = movescu(pacs.port, "DEST_ALL", "QueryRetrieveLevel=STUDY",
                              f"StudyInstanceUID={stray.StudyInstanceUID}")
        stored = {row[0]: dataset_bytes(storage.resolve(pacs.settings["STORAGE_DIR"], row[1])) for row in pacs.query(
            "SELECT sop_instance_uid, storage_path FROM instances i JOIN series se ON se.id = i.series_ref"
            " JOIN studies s ON s.id = se.study_ref WHERE s.study_instance_uid = ?", study_uid)}
        received = {}
        for name in ("all", "plain"):
            received[name] = {}
            for path in sorted((work / name).iterdir()):
                ds = dcmread(path)
                received[name][ds.SOPInstanceUID] = {
                    "identical": dataset_bytes(path) == stored.get(ds.SOPInstanceUID),
                    "syntax": str(ds.file_meta.TransferSyntaxUID)}
        audits = [dict(row) for row in pacs.query("SELECT actor, target, patient_id, outcome, detail FROM audit_log"
                                                   " WHERE action = 'image.transfer'")]
        return {"moved_all": moved_all.returncode, "moved_plain": moved_plain.returncode,
                "unknown": unknown.stderr[-3000:], "quarantined": quarantined.stderr[-3000:],
                "moved_all_log": moved_all.stderr[-3000:], "stored": sorted(stored), "rle": rle.SOPInstanceUID,
                "received": received, "audits": audits}
    finally:
        for process in destinations:
            process.terminate()
            process.wait()
        assert pacs.server.stop() == 0


def wait_until(condition, seconds: float = 60) -> bool:
    """Poll the state itself until it holds; False when ``seconds`` passed."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def routing(work: Path) -> dict:
    """Forward rules and "send to…": a CT rule delivers at once; a destination that is down gets
    the study after it comes back, across a restart of pacslite."""
    instance = work / "instance"
    now_port, later_port = free_port(), free_port()
    for args in (["STORESCU"], ["DEST_NOW", "--host", "127.0.0.1", "--port", str(now_port), "--may", ""],
                 ["DEST_LATER", "--host", "127.0.0.1", "--port", str(later_port), "--may", ""]):
        assert flask_cli(instance, "ae", "add", *args).returncode == 0
    rules = [flask_cli(instance, "forward", "add", "--modality", "CT", "--to", "DEST_NOW"),
             flask_cli(instance, "forward", "add", "--from-ae", "STORESCU", "--to", "DEST_LATER")]
    assert all(rule.returncode == 0 for rule in rules), [rule.stderr for rule in rules]
    quick = {"PACSLITE_FORWARD_DELAY_SECONDS": "0.5", "PACSLITE_FORWARD_RETRY_FIRST_SECONDS": "0.5",
             "PACSLITE_FORWARD_POLL_SECONDS": "0.2"}
    pacs = pacs_server.Pacs(instance, **quick)
    processes = [start_storescp("DEST_NOW", now_port, work / "now")]
    result: dict = {}
    try:
        reg = pacs.register(patient_id="FWD01", name="张三", sex="M", birth_date="1980-02-03", station_ae="")
        pacs.send_series(work / "sent", 2, accession=reg.accession_number, patient_id="FWD01",
                         name="ZHANG^SAN", sex="M", birth_date="19800203")

        def state(destination: str) -> list:
            return [tuple(r) for r in pacs.query("SELECT state, attempts, images_sent FROM outbound_queue"
                                                 " WHERE destination_ae = ? ORDER BY id", destination)]
        result["now_sent"] = wait_until(lambda: state("DEST_NOW") and state("DEST_NOW")[-1][0] == "sent")
        result["later_retrying"] = wait_until(lambda: state("DEST_LATER") and state("DEST_LATER")[-1][1] >= 2)
        result["later_before"] = state("DEST_LATER")
        assert pacs.server.stop() == 0
        pacs.restart(**quick)
        processes.append(start_storescp("DEST_LATER", later_port, work / "later"))
        result["later_sent"] = wait_until(lambda: state("DEST_LATER")[-1][0] == "sent")
        result["queue"] = {"DEST_NOW": state("DEST_NOW"), "DEST_LATER": state("DEST_LATER")}

        # "Send to…" from the exam page, as a technologist
        from pacslite import create_app
        from tests.conftest import INDEPENDENT_OF_HOST_AND_HOUR, csrf_token, login
        pacs.add_user("tech_fwd", "technologist")
        app = create_app({"INSTANCE_DIR": str(instance), "DEFAULT_LANGUAGE": "en", **INDEPENDENT_OF_HOST_AND_HOUR})
        client = app.test_client()
        login(client, "tech_fwd", "Secret-pass-1")
        page = client.get(f"/exams/{reg.accession_number}").get_data(as_text=True)
        result["page_shows_queue"] = "DEST_LATER" in page and "Sent" in page and 'id="send-form"' in page
        rows_before = len(state("DEST_NOW"))  # 1, or 2 when an image came while the study was being sent
        sent = client.post(f"/exams/{reg.accession_number}/send", data={
            "csrf_token": csrf_token(client, f"/exams/{reg.accession_number}"), "destination_ae": "DEST_NOW"})
        result["send_status"] = sent.status_code
        result["send_delivered"] = wait_until(lambda: len(state("DEST_NOW")) == rows_before + 1
                                              and state("DEST_NOW")[-1][0] == "sent")
        stored = {row[0]: dataset_bytes(storage.resolve(pacs.settings["STORAGE_DIR"], row[1])) for row in pacs.query(
            "SELECT sop_instance_uid, storage_path FROM instances")}
        result["received"] = {name: sorted(dataset_bytes(p) == stored.get(dcmread(p).SOPInstanceUID)
                                           for p in (work / name).iterdir()) for name in ("now", "later")}
        result["audits"] = [tuple(r) for r in pacs.query("SELECT action, actor, outcome FROM audit_log WHERE action"
                                                          " IN ('image.transfer', 'forward.send') ORDER BY id")]
    finally:
        for process in processes:
            process.terminate()
            process.wait()
        assert pacs.server.stop() == 0
    return result


def orthanc_rest(port: int, path: str, body: object | None = None) -> object:
    import urllib.request
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method="POST" if data else "GET")
    with urllib.request.urlopen(request, timeout=120) as answer:
        raw = answer.read()
    return raw if path.endswith("/file") else json.loads(raw or b"null")


def start_orthanc(work: Path, dicom_port: int, http_port: int, pacs_port: int,
                  more: dict | None = None) -> subprocess.Popen:
    """Orthanc (Debian's) as a workstation: pacslite is its modality "pacslite". ``more``:
    further configuration (DICOM TLS), which replaces what it names."""
    home = work / "orthanc"
    home.mkdir()
    config = {"Name": "ws", "StorageDirectory": str(home / "storage"), "IndexDirectory": str(home / "index"),
              "DicomAet": "ORTHANC", "DicomPort": dicom_port, "HttpPort": http_port, "Plugins": [],
              "RemoteAccessAllowed": False, "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True,
              "DicomAlwaysAllowEcho": True, "DefaultEncoding": "Utf8",
              "DicomModalities": {"pacslite": ["PACSLITE", "127.0.0.1", pacs_port]}, **(more or {})}
    (home / "orthanc.json").write_text(json.dumps(config))
    process = subprocess.Popen(["Orthanc", str(home / "orthanc.json")], stdout=subprocess.DEVNULL,
                               stderr=(home / "orthanc.log").open("w"))
    if not wait_until(lambda: _answers(http_port), 60):
        raise SystemExit("Orthanc did not start")
    return process


def _answers(http_port: int) -> bool:
    try:
        orthanc_rest(http_port, "/system")
        return True
    except OSError:
        return False


def retrieve_patient(http_port: int, work: Path, patient_id: str) -> tuple[int, dict[str, bytes]]:
    """Orthanc finds the patient's studies on pacslite and C-MOVEs the first to itself: how many
    studies it found, and each instance it then holds (SOP Instance UID → its data set bytes)."""
    query = orthanc_rest(http_port, "/modalities/pacslite/query",
                         {"Level": "Study", "Query": {"PatientID": patient_id, "StudyInstanceUID": ""}})
    found = len(orthanc_rest(http_port, f"/queries/{query['ID']}/answers"))
    orthanc_rest(http_port, f"/queries/{query['ID']}/answers/0/retrieve", {"TargetAet": "ORTHANC", "Synchronous": True})
    held = {}
    for orthanc_id in orthanc_rest(http_port, "/instances"):
        (work / "got.dcm").write_bytes(orthanc_rest(http_port, f"/instances/{orthanc_id}/file"))
        held[dcmread(work / "got.dcm").SOPInstanceUID] = dataset_bytes(work / "got.dcm")
    return found, held


def orthanc(work: Path) -> dict:
    """Orthanc as the workstation: finds the patient by name (ideographs and pinyin) through
    its REST API (a C-FIND to pacslite), retrieves the study (C-MOVE to itself), never the
    quarantined one."""
    instance = work / "instance"
    dicom_port, http_port = free_port(), free_port()
    for args in (["STORESCU"], ["ORTHANC", "--host", "127.0.0.1", "--port", str(dicom_port), "--may",
                                "query,retrieve"]):
        assert flask_cli(instance, "ae", "add", *args).returncode == 0
    pacs = pacs_server.Pacs(instance)
    process = None
    result: dict = {}
    try:
        reg = pacs.register(patient_id="ORT01", name="张三", sex="M", birth_date="1980-02-03", station_ae="")
        files = pacs.send_series(work / "sent", 3, accession=reg.accession_number, patient_id="ORT01",
                                 name="ZHANG^SAN", sex="M", birth_date="19800203")
        stray = make_ct(work / "stray.dcm", accession="NOSUCH", patient_id="ORT01", name="ZHANG^SAN")
        storescu(pacs.port, [work / "stray.dcm"])
        process = start_orthanc(work, dicom_port, http_port, pacs.port)
        found = {}
        for name in ("张*", "ZHANG*"):
            query = orthanc_rest(http_port, "/modalities/pacslite/query",
                                 {"Level": "Study", "Query": {"PatientName": name, "StudyInstanceUID": "",
                                                              "AccessionNumber": ""}})
            answers = orthanc_rest(http_port, f"/queries/{query['ID']}/answers?expand&simplify")
            found[name] = [(a.get("PatientName"), a.get("AccessionNumber")) for a in answers]
        result["found"] = found
        quarantined = orthanc_rest(http_port, "/modalities/pacslite/query",
                                   {"Level": "Study", "Query": {"StudyInstanceUID": stray.StudyInstanceUID}})
        result["quarantined_answers"] = len(orthanc_rest(http_port, f"/queries/{quarantined['ID']}/answers"))
        _, held = retrieve_patient(http_port, work, "ORT01")
        stored = {row[0]: dataset_bytes(storage.resolve(pacs.settings["STORAGE_DIR"], row[1])) for row in pacs.query(
            "SELECT sop_instance_uid, storage_path FROM instances")}
        result["received"] = {uid: data == stored.get(uid) for uid, data in held.items()}
        result["sent"] = sorted(dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files)
    finally:
        if process is not None:
            process.terminate()
            process.wait()
        assert pacs.server.stop() == 0
    return result


def orthanc_tls(work: Path) -> dict:
    """Orthanc over DICOM TLS both ways: it queries pacslite's TLS port and retrieves the study
    (C-MOVE to itself); pacslite sends to it over TLS, each side checking the other's
    certificate (Orthanc's pinned for its AE in pacslite, pacslite's trusted by Orthanc)."""
    instance = work / "instance"
    dicom_port, http_port = free_port(), free_port()
    key, certificate = self_signed_certificate(work, "orthanc")
    for args in (["STORESCU"], ["ORTHANC", "--host", "127.0.0.1", "--port", str(dicom_port), "--may",
                                "query,retrieve", "--certificate", str(certificate)]):
        assert flask_cli(instance, "ae", "add", *args).returncode == 0
    pacs = pacs_server.Pacs(instance)
    process = None
    result: dict = {}
    try:
        reg = pacs.register(patient_id="ORT02", name="张三", sex="M", birth_date="1980-02-03", station_ae="")
        files = pacs.send_series(work / "sent", 2, accession=reg.accession_number, patient_id="ORT02",
                                 name="ZHANG^SAN", sex="M", birth_date="19800203")
        tls = {"DicomTlsEnabled": True, "DicomTlsCertificate": str(certificate), "DicomTlsPrivateKey": str(key),
               "DicomTlsTrustedCertificates": str(instance / "tls" / "pacslite.crt"),
               "DicomTlsRemoteCertificateRequired": True,
               "DicomModalities": {"pacslite": {"AET": "PACSLITE", "Host": "127.0.0.1", "Port": pacs.tls_port,
                                                "UseDicomTls": True},
                                   "plain": ["PACSLITE", "127.0.0.1", pacs.port]}}
        process = start_orthanc(work, dicom_port, http_port, pacs.tls_port, tls)
        result["found"], held = retrieve_patient(http_port, work, "ORT02")
        result["received"] = sorted(held)
        result["sent"] = sorted(dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files)
        # over the plain port, the AE whose certificate is pinned is refused
        try:
            orthanc_rest(http_port, "/modalities/plain/echo", {})
            result["plain_echo"] = "answered"
        except OSError as exc:  # Orthanc answers an HTTP error when the C-ECHO failed
            result["plain_echo"] = str(exc)[:200]
        result["refusals"] = [tuple(r) for r in pacs.query("SELECT calling_ae, reason FROM association_rejections")]
    finally:
        if process is not None:
            process.terminate()
            process.wait()
        assert pacs.server.stop() == 0
    return result


def commitment(work: Path) -> dict:
    """Orthanc as a storage commitment SCU through its REST API: it asks pacslite about three
    stored images and one it never sent, and gets the report back on its own DICOM port."""
    instance = work / "instance"
    dicom_port, http_port = free_port(), free_port()
    for args in (["STORESCU"], ["ORTHANC", "--host", "127.0.0.1", "--port", str(dicom_port), "--may", "commitment"]):
        assert flask_cli(instance, "ae", "add", *args).returncode == 0
    pacs = pacs_server.Pacs(instance, PACSLITE_FORWARD_POLL_SECONDS="0.5")
    process = None
    result: dict = {}
    try:
        reg = pacs.register(patient_id="SC01", name="张三", sex="M", birth_date="1980-02-03", station_ae="")
        files = pacs.send_series(work / "sent", 3, accession=reg.accession_number, patient_id="SC01",
                                 name="ZHANG^SAN", sex="M", birth_date="19800203")
        process = start_orthanc(work, dicom_port, http_port, pacs.port)
        stored = [[str(ds.SOPClassUID), str(ds.SOPInstanceUID)] for ds in
                  (dcmread(f, stop_before_pixels=True) for f in files)]
        unknown = [stored[0][0], "1.2.826.0.1.3680043.9.9999.1"]
        asked = orthanc_rest(http_port, "/modalities/pacslite/storage-commitment",
                             {"DicomInstances": [*stored, unknown], "Timeout": 60})
        report: dict = {}

        def reported() -> bool:
            report.update(orthanc_rest(http_port, f"/storage-commitment/{asked['ID']}"))
            return report.get("Status") != "Pending"
        result["answered"] = wait_until(reported, 60)
        result["report"] = report
        result["stored"] = [uid for _, uid in stored]
        result["unknown"] = unknown[1]
        wait_until(lambda: pacs.query("SELECT state FROM commitments")[0][0] in ("delivered", "failed"), 30)
        result["kept"] = [list(r) for r in pacs.query("SELECT transaction_uid, state, delivered_on, requested, committed"
                                                       " FROM commitments")]
    finally:
        if process is not None:
            process.terminate()
            process.wait()
        assert pacs.server.stop() == 0
    return result


def key_objects(work: Path) -> dict:
    """A report signed with two key images: its Key Object Selection document, stored by the
    background duty, is moved by movescu to a workstation (storescp) like any image."""
    from pacslite.core import audit
    from pacslite.pacs import key_images
    from pacslite.ris import patients, reports
    instance = work / "instance"
    dest_port = free_port()
    for args in (["WORKSTATION", "--may", "query,retrieve"], ["STORESCU"],
                 ["DEST_ALL", "--host", "127.0.0.1", "--port", str(dest_port), "--may", ""]):
        assert flask_cli(instance, "ae", "add", *args).returncode == 0
    pacs = pacs_server.Pacs(instance)
    pacs.add_user("dr_kos", "radiologist", display_name="KOS")
    destination = start_storescp("DEST_ALL", dest_port, work / "ws", "+xa")
    try:
        reg = pacs.register(patient_id="KOS001", name="张三", sex="M", birth_date="1980-02-03", station_ae="")
        files = pacs.send_series(work / "sent", 2, accession=reg.accession_number, patient_id="KOS001",
                                 name="ZHANG^SAN", sex="M", birth_date="19800203")
        study_uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        conn = pacs.conn()
        try:
            doctor = audit.Actor("dr_kos")
            for (instance_id,) in conn.execute("SELECT id FROM instances").fetchall():
                key_images.mark(conn, doctor, instance_id, {"note": "关键"})
            reports.sign(conn, doctor, patients.get_exam(conn, reg.accession_number),
                         {"findings": "f", "impression": "i", "result_class": "abnormal", "level": "final",
                          "revision": "0"}, pacs.settings)
        finally:
            conn.close()
        stored = wait_until(lambda: pacs.query("SELECT COUNT(*) FROM key_object_documents")[0][0] == 1, 30)
        ko = pacs.query("SELECT se.series_instance_uid, i.sop_instance_uid FROM instances i JOIN series se"
                        " ON se.id = i.series_ref WHERE i.sop_class_uid = ?", key_images.KOS_SOP_CLASS)
        moved = movescu(pacs.port, "DEST_ALL", "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={study_uid}",
                        f"SeriesInstanceUID={ko[0][0]}")
        received = [[str(ds.SOPClassUID), str(ds.SOPInstanceUID)] for ds in
                    (dcmread(p, stop_before_pixels=True) for p in (work / "ws").iterdir())]
        return {"stored": stored, "kos": ko[0][1], "moved": moved.returncode, "log": moved.stderr[-1500:],
                "received": received}
    finally:
        destination.terminate()
        destination.wait()
        assert pacs.server.stop() == 0


if __name__ == "__main__":
    scenario = {"routing": routing, "orthanc": orthanc, "orthanc_tls": orthanc_tls, "commitment": commitment,
                "key_objects": key_objects}.get(
        sys.argv[2] if len(sys.argv) > 2 else "", main)
    print(json.dumps(scenario(Path(sys.argv[1]))))
