#!/usr/bin/env bash
# Install kiosk as a systemd service on this machine (Raspberry Pi OS 64-bit / Debian), or remove it again.
#
#   sudo bash scripts/install.sh               user, venv, /etc/kiosk, the unit; enable; start once configured
#   sudo bash scripts/install.sh --uninstall   stop and remove the unit, the venv and the user (keeps /etc/kiosk)
#
# What it creates (owner, mode):
#   system user and group "kiosk" (no login, home /var/lib/kiosk), in the groups audio and gpio where they exist
#   /opt/kiosk/venv                  root:root 0755  kiosk and its dependencies (the unit's ExecStart)
#   /opt/kiosk/README.md             root:root 0644  (the unit's Documentation=)
#   /etc/kiosk                       root:kiosk 0750
#   /etc/kiosk/kiosk.toml            root:kiosk 0640 from config/kiosk.toml, only if missing
#   /etc/kiosk/broker-api-key        root:root 0600  empty, only if missing (systemd hands it over as a credential)
#   /etc/systemd/system/kiosk.service root:root 0644 SupplementaryGroups= cut to the groups that exist
#   /etc/systemd/system/systemd-time-wait-sync.service.d/kiosk.conf root:root 0644  wait for NTP at most 90 s
# Running it again upgrades the venv and the unit and keeps the config and the key.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: install.sh [--uninstall [--purge]] [--dry-run] [--root DIR] [--python PYTHON] [--pip-args ARGS] [--no-start]

  --uninstall     stop, disable and remove the service, /opt/kiosk and the kiosk user; keep /etc/kiosk
  --purge         with --uninstall: also remove /etc/kiosk (config and key) and /var/lib/kiosk
  --dry-run       print every step, change nothing
  --root DIR      install into DIR as if it were / (an image, a test); systemctl is not run, only printed
  --python PY     the Python that builds the venv (default: python3)
  --pip-args A    extra arguments for pip install (e.g. "--no-deps", "--no-index --find-links /srv/wheels")
  --no-start      enable the service but do not start it
EOF
}

src="$(cd "$(dirname "$0")/.." && pwd)"
root=""
dry=0
uninstall=0
purge=0
start=1
python="python3"
pip_args=""
user="kiosk"

while (($#)); do
  case "$1" in
    --uninstall) uninstall=1 ;;
    --purge) purge=1 ;;
    --dry-run) dry=1 ;;
    --root) root="${2:?--root needs a directory}"; shift ;;
    --root=*) root="${1#--root=}" ;;
    --python) python="${2:?--python needs a path}"; shift ;;
    --pip-args) pip_args="${2?--pip-args needs a value}"; shift ;;
    --no-start) start=0 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

if [ -n "$root" ]; then
  [ -d "$root" ] || { echo "install.sh: --root $root is not a directory" >&2; exit 2; }
  for f in passwd group shadow gshadow; do
    [ -f "$root/etc/$f" ] || {
      echo "install.sh: --root $root has no etc/$f: the user and groups are made there (useradd --root); give it" \
        "the etc/passwd, etc/group, etc/shadow and etc/gshadow of the system it stands for" >&2
      exit 2
    }
  done
  root="$(cd "$root" && pwd)"
fi
if ((!dry)) && [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run it as root: sudo bash scripts/install.sh $*" >&2
  exit 1
fi

venv="/opt/kiosk/venv"
etc="/etc/kiosk"
unit="/etc/systemd/system/kiosk.service"
# Bounds systemd-time-wait-sync (which the unit waits for) to 90 s: a kiosk without NTP still starts.
dropin="/etc/systemd/system/systemd-time-wait-sync.service.d/kiosk.conf"
step() { echo "install: $*"; }
# Run a command (print it first); with --dry-run only print it.
run() {
  echo "+ $*"
  ((dry)) || "$@"
}
# systemctl acts on the running system: with --root or --dry-run it is printed, never run.
sysd() {
  if ((dry)) || [ -n "$root" ]; then
    echo "+ (not run: ${root:+--root}${root:+ }${root:-dry run}) systemctl $*"
  else
    echo "+ systemctl $*"
    systemctl "$@"
  fi
}
rootflag=()
[ -z "$root" ] || rootflag=(--root "$root")
has_group() { grep -q "^$1:" "$root/etc/group" 2>/dev/null; }
has_user() { grep -q "^$1:" "$root/etc/passwd" 2>/dev/null; }
gid_of() { awk -F: -v n="$1" '$1 == n { print $3 }' "$root/etc/group"; }

if ((uninstall)); then
  step "stopping and removing the service"
  if [ -e "$root$unit" ] || ((dry)); then
    sysd disable --now kiosk.service || true
    run rm -f "$root$unit" "$root$dropin"
    sysd daemon-reload
  fi
  step "removing /opt/kiosk"
  run rm -rf "$root/opt/kiosk"
  if has_user "$user"; then
    step "removing the user $user"
    run userdel "${rootflag[@]}" "$user"
  fi
  if has_group "$user"; then
    run groupdel "${rootflag[@]}" "$user"
  fi
  if ((purge)); then
    step "removing $etc and /var/lib/kiosk (--purge)"
    run rm -rf "$root$etc" "$root/var/lib/kiosk"
  elif [ -d "$root$etc" ]; then
    step "kept $etc (your config and key); remove it with --uninstall --purge"
  fi
  step "uninstalled"
  exit 0
fi

step "0/5 apt packages the service needs"
packages=(
  python3 python3-venv python3-dev gcc pkg-config libsystemd-dev # the venv; systemd-python builds from source
  libportaudio2 libasound2-plugins alsa-utils                    # PortAudio over ALSA; alsamixer for the gain
  espeak-ng                                                      # the spoken sentence of `kiosk test speaker`
)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [ -n "$root" ]; then
    echo "+ (not run: --root $root) apt-get install ${missing[*]}"
  else
    run apt-get update
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  fi
fi

step "1/5 system user $user"
if ! has_group "$user"; then
  run groupadd "${rootflag[@]}" --system "$user"
fi
if ! has_user "$user"; then
  run useradd "${rootflag[@]}" --system --gid "$user" --home-dir /var/lib/kiosk --no-create-home \
    --shell /usr/sbin/nologin --comment "voice kiosk daemon" "$user"
fi
groups=()
for group in audio gpio; do
  if has_group "$group"; then
    groups+=("$group")
  else
    step "   no group $group on this system: left out (gpio exists only on Raspberry Pi OS)"
  fi
done
if ((${#groups[@]})); then
  run usermod "${rootflag[@]}" --append --groups "$(IFS=,; echo "${groups[*]}")" "$user"
fi

step "2/5 virtual environment $venv (pip shows its progress; on a Pi this takes a few minutes)"
run mkdir -p "$root/opt/kiosk"
if [ ! -x "$root$venv/bin/python" ]; then
  run "$python" -m venv "$root$venv"
fi
# shellcheck disable=SC2086  # pip_args is a list of words on purpose
run "$root$venv/bin/python" -m pip install --upgrade --progress-bar on $pip_args "$src"
run install -m 0644 -o root -g root "$src/README.md" "$root/opt/kiosk/README.md"

kiosk_gid="$(gid_of "$user")"
((dry)) && kiosk_gid="${kiosk_gid:-$user}"
step "3/5 configuration in $etc"
run install -d -m 0750 -o root -g "$kiosk_gid" "$root$etc"
if [ -e "$root$etc/kiosk.toml" ]; then
  step "   kept the existing $etc/kiosk.toml"
else
  run install -m 0640 -o root -g "$kiosk_gid" "$src/config/kiosk.toml" "$root$etc/kiosk.toml"
fi
if [ -e "$root$etc/broker-api-key" ]; then
  step "   kept the existing $etc/broker-api-key"
else
  run install -m 0600 -o root -g root /dev/null "$root$etc/broker-api-key"
fi

step "4/5 systemd unit $unit"
run install -d -m 0755 "$root/etc/systemd/system"
wanted="${groups[*]}"
if ((dry)); then
  echo "+ install -m 0644 $src/systemd/kiosk.service $root$unit (SupplementaryGroups=$wanted)"
else
  echo "+ install -m 0644 $src/systemd/kiosk.service $root$unit (SupplementaryGroups=$wanted)"
  tmp="$(mktemp)"
  if [ -n "$wanted" ]; then
    sed "s/^SupplementaryGroups=.*/SupplementaryGroups=$wanted/" "$src/systemd/kiosk.service" >"$tmp"
  else
    sed "/^SupplementaryGroups=/d" "$src/systemd/kiosk.service" >"$tmp"
  fi
  install -m 0644 -o root -g root "$tmp" "$root$unit"
  rm -f "$tmp"
fi
run install -D -m 0644 -o root -g root "$src/systemd/systemd-time-wait-sync.service.d/kiosk.conf" "$root$dropin"

step "5/5 enable and start"
sysd daemon-reload
sysd enable kiosk.service
configured=0
if [ -s "$root$etc/broker-api-key" ] && ((!dry)) &&
  CREDENTIALS_DIRECTORY="$root$etc" "$root$venv/bin/kiosk" check-config --config "$root$etc/kiosk.toml" >/dev/null 2>&1; then
  configured=1
fi
if ((start && configured)); then
  sysd restart kiosk.service
else
  step "   not started yet: the config needs your broker's details first. Next:"
  step "     sudo nano $etc/kiosk.toml                 (broker url, agent_id, pins; see README)"
  step "     sudo nano $etc/broker-api-key             (the key alone, on one line)"
  step "     sudo $venv/bin/kiosk check-config         (says what to fix, with line numbers)"
  step "     sudo $venv/bin/kiosk test mic | speaker | leds | button"
  step "     sudo systemctl start kiosk && journalctl -u kiosk -f"
fi
step "done"
