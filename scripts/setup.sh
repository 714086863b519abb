#!/usr/bin/env bash
# Install what kiosk needs on Debian bookworm / Raspberry Pi OS (64-bit) and create .venv with the project in it.
# Usage: scripts/setup.sh [EXTRAS]     EXTRAS defaults to "sandbox" (the daemon and `kiosk demo`); the test suite
# uses "sandbox,dev", which also brings the test tools: a sound server, a headless browser, iproute2.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-sandbox}"

apt_packages=(
  python3 python3-venv python3-dev gcc pkg-config libsystemd-dev  # systemd-python builds from source
  libportaudio2 libasound2-plugins alsa-utils                     # PortAudio over ALSA (and ALSA's pulse plugin)
  espeak-ng                                                       # the demo's visitor, `kiosk test speaker`
)
case ",$extras," in
  *,dev,*)
    apt_packages+=(
      pulseaudio pulseaudio-utils sox                             # real-time audio tests on virtual devices
      systemd                                                     # systemd-analyze for the unit's checks
      chromium                                                    # the screen's browser tests (headless)
      iproute2                                                    # network-fault tests: ip netns, TUN addresses
    )
    ;;
esac
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing apt packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# No -q: on a Pi the install takes minutes, and pip's lines show it is still going.
echo "setup: installing kiosk and its Python packages into .venv (extras: ${extras})"
.venv/bin/python -m pip install --upgrade --progress-bar on pip
.venv/bin/python -m pip install --progress-bar on -e ".[${extras}]"
echo "setup: ready (.venv, extras: ${extras})"
