"""The OHIF Viewer, vendored: installed from npm's published package (a pinned version whose
published integrity is checked here), never built, and served by pacslite under ``/ohif/``.

The package's prebuilt ``dist`` folder assumes it is served from ``/``: its index page and
every webpack chunk name ``/`` as their public path. :func:`install` rewrites those to
:data:`MOUNT` once, when it unpacks the package; the configuration (``app-config.js``) is
served by pacslite itself, pointing OHIF at pacslite's DICOMweb with the user's session.

Run ``python -m pacslite.ohif [target]`` to install (the README's commands do); it does
nothing when the pinned version is already there.
"""
from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Callable

PACKAGE = "@ohif/app"
VERSION = "3.13.2"
#: The ``dist.integrity`` npm publishes for this version (``npm view @ohif/app@3.13.2 dist.integrity``).
INTEGRITY = "sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="
MOUNT = "/ohif/"
DEFAULT_TARGET = Path(__file__).resolve().parent.parent / "vendor" / "ohif"
VERSION_FILE = ".pacslite-version"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


class InstallError(Exception):
    """The package could not be fetched, or is not the one published."""


def installed(target: Path) -> bool:
    """Whether the pinned version is installed (and whole) in ``target``."""
    try:
        return (target / VERSION_FILE).read_text().strip() == VERSION and (target / "index.html").is_file()
    except OSError:
        return False


def integrity_of(path: Path) -> str:
    digest = hashlib.sha512()
    with open(path, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return "sha512-" + base64.b64encode(digest.digest()).decode()


def fetch(directory: Path) -> Path:
    """``npm pack`` the pinned version into ``directory``; its integrity checked."""
    try:
        done = subprocess.run(["npm", "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", str(directory),
                               "--silent"], capture_output=True, text=True, timeout=1800, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InstallError(f"npm pack failed: {exc}") from exc
    tarballs = list(directory.glob("*.tgz"))
    if done.returncode != 0 or len(tarballs) != 1:
        raise InstallError(f"npm pack failed: {(done.stderr or done.stdout).strip()[-500:]}")
    found = integrity_of(tarballs[0])
    if found != INTEGRITY:
        raise InstallError(f"{tarballs[0].name} is not the published {PACKAGE}@{VERSION}: integrity {found}")
    return tarballs[0]


def unpack(tarball: Path, target: Path) -> None:
    """The package's ``dist`` folder into ``target``, rebased onto :data:`MOUNT`."""
    staging = target.with_name(target.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp, tarfile.open(tarball) as archive:
        members = [m for m in archive.getmembers() if m.name.startswith("package/dist/")]
        archive.extractall(tmp, members=members, filter="data")
        os.replace(Path(tmp) / "package" / "dist", staging)
    rebase(staging)
    (staging / VERSION_FILE).write_text(VERSION + "\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)


def rebase(dist: Path) -> None:
    """Serve from :data:`MOUNT` instead of ``/``: the index page's links and inline public URL,
    each bundle's webpack public path, and the style sheets' fonts. The service worker (it would fetch a script from the
    internet) and the sample configuration are dropped."""
    index = dist / "index.html"
    html = index.read_text(encoding="utf-8")
    html = re.sub(r'<script[^>]*src="/init-service-worker\.js"[^>]*></script>', "", html)
    html = html.replace('window.PUBLIC_URL="/"', f'window.PUBLIC_URL="{MOUNT}"')
    html = re.sub(r'(href|src)="/(?!/)', rf'\1="{MOUNT}', html)
    index.write_text(html, encoding="utf-8")
    for bundle in dist.glob("*.js"):
        _rewrite(bundle, lambda text: text.replace('__webpack_require__.p = "/";', f'__webpack_require__.p = "{MOUNT}";'))
    for sheet in dist.glob("*.css"):
        _rewrite(sheet, lambda text: re.sub(r"url\(/(?!/)", f"url({MOUNT}", text))
    for unwanted in ("app-config.js", "init-service-worker.js", "sw.js", "_redirects", "_headers"):
        (dist / unwanted).unlink(missing_ok=True)


def _rewrite(path: Path, change: Callable[[str], str]) -> None:
    text = path.read_text(encoding="utf-8")
    changed = change(text)
    if changed != text:
        path.write_text(changed, encoding="utf-8")


def install(target: Path = DEFAULT_TARGET) -> bool:
    """Install the pinned version into ``target`` unless it is there; False when it was."""
    if installed(target):
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as download:
        unpack(fetch(Path(download)), target)
    return True


def inline_script_hashes(index_html: str) -> list[str]:
    """CSP source expressions for the index page's inline scripts (its public URL)."""
    return ["'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
            for script in _INLINE_SCRIPT.findall(index_html)]


def main(argv: list[str]) -> int:
    target = Path(argv[1]) if len(argv) > 1 else DEFAULT_TARGET
    try:
        fresh = install(target)
    except (InstallError, OSError, tarfile.TarError) as exc:
        print(f"pacslite: the OHIF viewer could not be installed ({exc}); pacslite runs without it", file=sys.stderr)
        return 1
    print(f"pacslite: OHIF Viewer {VERSION} {'installed in' if fresh else 'already in'} {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
