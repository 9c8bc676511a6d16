"""pacslite: the single process. Web pages (waitress) now; the DICOM server and the sweep join it.

Run ``python app.py``. SIGINT or SIGTERM stops everything cleanly. ``flask --app app …`` finds
``create_app`` here for the command line.
"""
from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

from waitress import create_server

from pacslite import create_app

log = logging.getLogger("pacslite")


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds waitress's loop in the main thread


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app()
    server = create_server(app, host=app.config["HTTP_HOST"], port=app.config["HTTP_PORT"],
                           threads=app.config["HTTP_THREADS"], ident="pacslite")
    services: list = []  # things with .stop(), started below: the DICOM server and the sweep (next issues)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(f"pacslite: listening on http://{app.config['HTTP_HOST']}:{server.effective_port}/", flush=True)
    try:
        server.run()  # returns (after shutting its workers down) when a signal raises SystemExit
    finally:
        for service in reversed(services):
            service.stop()
        server.close()
        log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
