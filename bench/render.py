#!/usr/bin/env python3
"""Server time to show images: the first render of a 512×512 16-bit CT image and a cached
thumbnail, through the real routes (login, access check, audit, cache) with Flask's test client.

    .venv/bin/python bench/render.py [--repeat 20]

Targets (the viewer issue): first image under 100 ms, cached thumbnail under 10 ms.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pacslite.core import audit, db
from pacslite.ris import patients, users
from pacslite.pacs import filing
from pacslite import create_app  # noqa: E402
from pacslite.pacs.index import Source  # noqa: E402
from tests.conftest import EXAM_FORM, login  # noqa: E402
from tests.dicomkit import make_ct  # noqa: E402


def timed(client, url: str) -> float:
    started = time.perf_counter()
    response = client.get(url)
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status_code == 200 and response.mimetype == "image/png", (url, response.status_code)
    assert "X-Pacslite-Placeholder" not in response.headers
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pacslite-render-"))
    try:
        app = create_app({"INSTANCE_DIR": str(work / "instance"), "DEFAULT_LANGUAGE": "en"})
        conn = db.connect(app.config["DATABASE"])
        users.create(conn, audit.SYSTEM, {"username": "ward", "password": "Secret-pass-1", "roles": ["clinician"]})
        exam = patients.register_exam(conn, audit.SYSTEM, app.config, EXAM_FORM, EXAM_FORM, confirm_demographics=True)
        for number in range(args.repeat):
            path = work / f"{number}.dcm"
            make_ct(path, accession=exam.accession_number, patient_id="P0001", size=512, seed=number,
                    series_uid="2.25.1", study_uid="2.25.2", instance_number=number + 1)
            filing.ingest_bytes(conn, app.config["STORAGE_DIR"], path.read_bytes(), Source("CT01"))
        instances = [r[0] for r in conn.execute("SELECT id FROM instances ORDER BY id")]
        series = conn.execute("SELECT id FROM series").fetchone()[0]
        client = app.test_client()
        login(client, "ward", "Secret-pass-1")
        timed(client, f"/instances/{instances[0]}/render.png?wc=40&ww=400")  # warm up imports and the audit row
        first = [timed(client, f"/instances/{i}/render.png") for i in instances[1:]]
        windowed = [timed(client, f"/instances/{i}/render.png?wc=-600&ww=1500") for i in instances[1:]]
        timed(client, f"/series/{series}/thumbnail.png")
        thumbnails = [timed(client, f"/series/{series}/thumbnail.png") for _ in range(args.repeat)]
        print(f"first render, 512×512 CT, header window : median {statistics.median(first):6.1f} ms,"
              f" max {max(first):6.1f} ms  (target < 100 ms)")
        print(f"first render, 512×512 CT, lung window   : median {statistics.median(windowed):6.1f} ms,"
              f" max {max(windowed):6.1f} ms")
        print(f"cached thumbnail                        : median {statistics.median(thumbnails):6.1f} ms,"
              f" max {max(thumbnails):6.1f} ms  (target < 10 ms)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
