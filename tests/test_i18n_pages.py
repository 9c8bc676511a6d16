"""Every page, rendered in Chinese, says nothing in English: each GET route of the access
matrix, opened by a role that may, in zh_CN; the visible text (text, titles, placeholders,
labels, button values) may hold only Chinese, numbers, the data the test seeded, and a short
list of codes and units."""
from __future__ import annotations

import re
from html.parser import HTMLParser

from tests import test_access_matrix
from tests.test_access_matrix import documented_matrix

world = test_access_matrix.world  # the fixture: one of everything, and a client per role

#: Codes, units and names that stay as they are in a Chinese page.
CODES = {
    "CT", "HC", "MR", "MRI", "DR", "CR", "DX", "DSA", "XA", "MG", "US", "RF", "PET", "DICOM", "DICOMweb", "AE", "PACS", "HIS", "HL7",
    "pacslite", "OHIF", "ID", "UID", "UIDs", "MPPS", "ECHO", "CSV", "JSON", "API", "PDF", "ZIP", "DICOMDIR", "ISO",
    "IR", "UTF", "GB", "JPEG", "PNG", "BMP", "TIFF", "PDI", "WADO", "QIDO", "STOW", "RS", "SCP", "SCU", "STAT",
    "HL", "IHE", "SOP", "CD", "DVD", "ISO", "mm", "px", "ms", "min", "KB", "MB", "GiB", "MiB", "KiB", "TB", "TiB",
    "HU", "W", "L", "h", "d", "y", "mo", "CPU", "IP", "URL", "HTTP", "HTTPS", "TLS", "MWL", "Q", "NTP",
    "YYYY", "MM", "DD", "HH", "Ctrl", "Enter", "Tab", "Esc", "Shift", "Alt", "Space", "GB18030", "GBK",
    "Latin", "Unicode", "PS", "Secondary", "Capture", "Storage", "FIND", "MOVE", "GET", "STORE",
    "N", "ACTION", "EVENT", "REPORT", "CREATE", "SET", "C", "A4", "A5", "flask", "app", "procedure", "add",
    "import", "list", "English", "DHCP", "PEM", "SHA",
}
#: What the world fixture seeded (the registration form's values, users, AEs, files, phrases).
SEEDED_PATTERNS = re.compile(r"\b(?:matrix|seed|target|u)_\w+|\bPACSLITE\b|\bC-ECHO\b")
SEEDED = ("Chest CT", "CHEST", "Dr Li", "Respiratory", "cough", "Normal chest", "No abnormality", "Name of",
          "ZHANG", "SAN", "Zhang", "San", "zhangsan", "zs", "form.png", "notes.txt", "Matrix", "MATRIX",
          "matrix_", "target_user", "seed_desk", "viewer", "u_", "admin", "ae:", "exam:", "patient:", "matrix",
          "zhang san", "UNSCHEDULED", "Administrator")
#: A token: letters, digits and the marks codes carry; only tokens of letters alone are words
#: (``SHA-256``, ``PACSLITE_OFFSITE_DIR``, ``image/png``, ``A26112900001`` are codes).
TOKEN = re.compile(r"[A-Za-z0-9_'./:-]+")
WORD = re.compile(r"[A-Za-z][A-Za-z'-]*[A-Za-z]")


class VisibleText(HTMLParser):
    """The text a user sees: text nodes (not scripts, styles, machine values in ``.mono``, ``pre``,
    ``code`` or ``translate="no"``) and the title, placeholder, aria-label and alt attributes and
    button values."""

    HIDDEN = {"script", "style", "pre", "code", "template"}
    VOID = {"input", "img", "br", "hr", "meta", "link", "source", "col", "area", "base", "wbr"}

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.stack: list[bool] = []  # per open element: hidden from here down

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        hidden = (bool(self.stack and self.stack[-1]) or tag in self.HIDDEN or values.get("translate") == "no"
                  or "mono" in (values.get("class") or "").split())
        if not hidden:
            for name in ("title", "placeholder", "aria-label", "alt"):
                if values.get(name):
                    self.parts.append(values[name] or "")
            if tag == "input" and values.get("type") in ("submit", "button") and values.get("value"):
                self.parts.append(values["value"] or "")
        if tag not in self.VOID:
            self.stack.append(hidden)

    def handle_endtag(self, tag: str) -> None:
        if tag not in self.VOID and self.stack:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if not (self.stack and self.stack[-1]):
            self.parts.append(data)


def english_words(html: str) -> set[str]:
    parser = VisibleText()
    parser.feed(html)
    text = SEEDED_PATTERNS.sub(" ", " ".join(parser.parts))
    for seeded in SEEDED:
        text = text.replace(seeded, " ")
    tokens = (t.strip(".:'-") for t in TOKEN.findall(text))
    return {t for t in tokens if WORD.fullmatch(t) and t not in CODES}


def test_every_page_in_chinese_has_no_english_words(app, conn, world) -> None:
    values, clients, _tokens = world
    found: dict[str, set[str]] = {}
    pages = 0
    for (method, path), allowed in sorted(documented_matrix().items()):
        if method != "GET" or path.startswith(("/api/", "/dicomweb", "/ohif")):
            continue
        who = next((role for role, ok in allowed.items() if ok and role != "anonymous"), None)
        if who is None:
            continue
        url = re.sub(r"<([^>]+)>", lambda m: values[m.group(1)], path)
        response = clients[who].get(url, headers={"Accept-Language": "zh-CN,zh;q=0.9"})
        if response.status_code != 200 or response.mimetype != "text/html":
            continue
        pages += 1
        words = english_words(response.get_data(as_text=True))
        if words:
            found[f"{path} ({who})"] = words
    assert pages >= 40, pages  # the test saw the pages, not a login form
    assert found == {}, "\n".join(f"{page}: {sorted(words)}" for page, words in sorted(found.items()))
