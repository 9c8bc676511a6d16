# Shared by bin/run and bin/test: Debian packages and the virtual environment in .venv.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=${PACSLITE_VENV:-.venv}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# apt_install PKG…: install the Debian packages that are missing (apt-get update once, first).
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

# make_venv REQUIREMENTS: a virtual environment with exactly the pinned packages.
make_venv() {
  apt_install python3 python3-venv python3-pip
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$1"
}

# install_ohif: the OHIF Viewer (pinned, integrity-checked npm package) into vendor/ohif. If it
# cannot be installed pacslite still runs, and its pages say the viewer is unavailable.
install_ohif() {
  if ! command -v npm >/dev/null; then  # Debian's npm, unless one came with another Node.js package
    apt_install npm || { echo "pacslite: npm could not be installed; OHIF is unavailable" >&2; return 0; }
  fi
  "$VENV/bin/python" -m pacslite.ohif || true
}
