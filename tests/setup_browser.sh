#!/bin/sh
# Idempotent: installs what the browser and Prometheus tests drive (Debian packages),
# unless already there. `make test` runs it; CI runs it as root on a fresh machine.
set -eu
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v chromedriver >/dev/null 2>&1 || missing="$missing chromium-driver"
command -v prometheus >/dev/null 2>&1 || missing="$missing prometheus"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1; then
  SUDO="sudo"
else
  echo "tests/setup_browser.sh: need$missing; run this script as root (apt-get install)" >&2
  exit 1
fi
echo "installing$missing (Debian packages, for the dashboard and Prometheus tests)" >&2
$SUDO apt-get update -q
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $missing
for tool in chromium chromedriver prometheus; do
  command -v "$tool" >/dev/null 2>&1 || { echo "tests/setup_browser.sh: $tool still missing" >&2; exit 1; }
done
