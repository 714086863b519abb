#!/usr/bin/env bash
# After the README's first command: prove the install works on this machine's CPU without sound card or pins.
#   scripts/smoke.sh MACHINE     e.g. aarch64; fails unless Python runs as MACHINE
# Checks: the userland is MACHINE, every package came as a wheel (scripts/check_wheels.py), the native libraries
# load (livekit's FFI, PortAudio, webrtcvad, lgpio on aarch64, systemd), check-config on the example config,
# kiosk devices, kiosk test leds on gpiozero's mock pins; then prints kiosk doctor --platform.
set -euo pipefail
cd "$(dirname "$0")/.."
want=${1:?usage: scripts/smoke.sh MACHINE}
py=.venv/bin/python
step() { echo "== smoke: $*"; }

step "userland"
got=$($py -c 'import platform; print(platform.machine(), platform.architecture()[0])')
echo "$got"
[ "$got" = "$want 64bit" ] || { echo "smoke: expected $want 64bit, got $got" >&2; exit 1; }

step "wheels"
$py scripts/check_wheels.py "$($py -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

step "native libraries"
$py - "$want" <<'PY'
import sys
import sounddevice  # PortAudio
import systemd.daemon  # libsystemd
import webrtcvad
from livekit import rtc

source = rtc.AudioSource(48000, 1)  # loads liblivekit_ffi and calls into it
apm = rtc.AudioProcessingModule(echo_cancellation=True, noise_suppression=True)  # WebRTC's APM, native
vad = webrtcvad.Vad(2)
print("livekit FFI, APM, PortAudio", sounddevice.get_portaudio_version()[1], "webrtcvad, libsystemd: loaded")
if sys.argv[1] == "aarch64":
    import lgpio  # the Raspberry Pi's pin library, with liblgpio bundled

    print("lgpio", lgpio.LGPIO_PY_VERSION if hasattr(lgpio, "LGPIO_PY_VERSION") else "", "loaded")
PY

config=$(mktemp --suffix=.toml)
trap 'rm -f "$config"' EXIT
# The first tested build of docs/hardware.md (a button and one LED) with a broker on this machine.
cat >"$config" <<'TOML'
[broker]
dialect = "livekit"
url = "http://127.0.0.1:9"

[trigger]
button_pin = 17

[leds]
kind = "single"
pin = 18
TOML

step "check-config"
.venv/bin/kiosk check-config --config "$config"

step "devices"
.venv/bin/kiosk devices

step "test leds (mock pins)"
GPIOZERO_PIN_FACTORY=mock .venv/bin/kiosk test leds --config "$config" --each 0.05

step "doctor --platform"
.venv/bin/kiosk doctor --platform || true  # its facts are for the note; no sound card or pins here is expected

echo "== smoke: passed on $want"
