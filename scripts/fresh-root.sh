#!/usr/bin/env bash
# Run the README's two commands, exactly as written, on a Debian bookworm that has never seen the project.
#
# Builds a minimal root (debootstrap --variant=minbase: no Python, no git, no procps), copies in only what every
# machine here has whatever the project (apt sources and apt.conf.d, CA certificates and the CA bundle, pip's config
# and the PIP_* / *_CA_* variables, local wheel directories named by pip's config, read-only), binds /proc, /sys and
# /dev, copies the committed checkout (git archive HEAD) to /root/kiosk and runs the first command (setup + kiosk demo),
# then the second (setup + the whole test suite) under chroot. The commands are read from the README's first two
# ```sh blocks, so the README and this check cannot drift apart. Exits non-zero when either fails; unmounts and removes
# the root on every exit path.
#
# With --arch arm64 the root is 64-bit Raspberry Pi OS's base, Debian bookworm arm64, emulated: debootstrap --foreign,
# then its second stage under qemu-user-static through binfmt_misc (mounted and registered with the F flag when
# absent). Its bootstrap is cached in /var/cache/kiosk-fresh-root between runs on this machine (only Debian's own
# packages are in it). It runs the first command with KIOSK_DEMO_SLOW (the demo's deadlines stretched for an emulated
# CPU), then scripts/smoke.sh aarch64 (wheels only, native libraries load, check-config, devices, LEDs on mock pins).
#
# Usage (as root): scripts/fresh-root.sh [--keep] [--arch arm64]   --keep leaves the root in place afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
checkout=$PWD
keep=0
arch=host
while (($#)); do
  case "$1" in
    --keep) keep=1 ;;
    --arch) arch=${2:?--arch needs arm64}; shift ;;
    *) echo "fresh-root: unknown argument $1 (usage: fresh-root.sh [--keep] [--arch arm64])" >&2; exit 2 ;;
  esac
  shift
done
if [ "$arch" != host ] && [ "$arch" != arm64 ]; then
  echo "fresh-root: --arch arm64 is the one other architecture (got $arch)" >&2
  exit 2
fi
#: How many times slower than real time the demo may run in the emulated root (qemu-user: 5-10x).
emulated_slow=8
cache=/var/cache/kiosk-fresh-root

if [ "$(id -u)" -ne 0 ]; then
  echo "fresh-root: run as root (debootstrap, mount and chroot need it)" >&2
  exit 2
fi

step_started=0
step() {
  step_started=$(date +%s)
  echo "== fresh-root: $*"
}
step_done() {
  echo "== fresh-root: $1 took $(($(date +%s) - step_started)) s"
}

root=$(mktemp -d /var/tmp/kiosk-fresh-root.XXXXXX)
mounts=()
cleanup() {
  local status=$?
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
    umount -R -l "${mounts[i]}" 2>/dev/null || true
  done
  if ((keep)); then
    echo "fresh-root: kept $root"
  else
    # Never delete through a mount that failed to come off.
    if ! grep -q " $root" /proc/self/mounts; then
      rm -rf --one-file-system "$root"
    else
      echo "fresh-root: $root still has mounts; left in place" >&2
    fi
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bind() {  # bind SOURCE [ro]: SOURCE at the same path inside the root
  local src=$1 dst=$root$1
  if [ -d "$src" ]; then mkdir -p "$dst"; else mkdir -p "$(dirname "$dst")" && touch "$dst"; fi
  mount --bind "$src" "$dst"
  mounts+=("$dst")
  mount --make-rslave "$dst"
  if [ "${2:-}" = ro ]; then mount -o remount,bind,ro "$dst"; fi
}

copy() {  # copy PATH...: each existing file or folder to the same path inside the root
  local path
  for path in "$@"; do
    [ -e "$path" ] || continue
    mkdir -p "$root$(dirname "$path")"
    cp -a "$path" "$root$(dirname "$path")/"
  done
}

# --- the README's commands
mapfile -t commands < <(python3 - README.md <<'PY'
import re, sys
blocks = re.findall(r"^```sh\n(.*?)^```", open(sys.argv[1]).read(), flags=re.M | re.S)
for block in blocks[:2]:
    print(" ".join(line.strip() for line in block.strip().splitlines()))
PY
)
if [ "${#commands[@]}" -ne 2 ]; then
  echo "fresh-root: README.md must open with two \`\`\`sh blocks (demo, then tests); found ${#commands[@]}" >&2
  exit 2
fi

# --- debootstrap, from the mirror this machine's apt already uses
if ! command -v debootstrap >/dev/null; then
  step "installing debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  step_done "installing debootstrap"
fi
mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(TARGET_OF)' 2>/dev/null |
  awk '$2 == "bookworm" && $3 == "deb" { print $1; exit }')
if [ -z "$mirror" ]; then
  apt-get update -qq
  mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(TARGET_OF)' |
    awk '$2 == "bookworm" && $3 == "deb" { print $1; exit }')
fi
if [ -z "$mirror" ]; then
  echo "fresh-root: this machine's apt sources name no bookworm repository to bootstrap from" >&2
  exit 2
fi
bootstrap() {  # bootstrap [ARGS...]: debootstrap --variant=minbase bookworm into the root, its log shown on failure
  debootstrap --variant=minbase "$@" bookworm "$root" "$mirror" >"$root.debootstrap.log" 2>&1 || {
    tail -20 "$root.debootstrap.log" >&2
    exit 1
  }
  rm -f "$root.debootstrap.log"
}
emulate_arm64() {  # binfmt_misc runs aarch64 binaries through qemu, also inside a chroot (the F flag)
  local binfmt=/proc/sys/fs/binfmt_misc
  [ -e "$binfmt/register" ] || mount -t binfmt_misc binfmt_misc "$binfmt"
  if [ ! -e "$binfmt/qemu-aarch64" ]; then
    if [ ! -e /usr/lib/binfmt.d/qemu-aarch64.conf ]; then
      step "installing qemu-user-static"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-user-static >/dev/null
      step_done "installing qemu-user-static"
    fi
    grep -v '^#' /usr/lib/binfmt.d/qemu-aarch64.conf >"$binfmt/register"
  fi
  if ! grep -q '^flags: .*F' "$binfmt/qemu-aarch64"; then
    echo "fresh-root: qemu-aarch64 is registered without the F flag: it cannot run inside a chroot" >&2
    exit 2
  fi
}
if [ "$arch" = arm64 ]; then
  emulate_arm64
  cached="$cache/bookworm-arm64-minbase.tar"
  if [ -s "$cached" ]; then
    step "the cached bookworm arm64 bootstrap ($cached)"
    tar -x -C "$root" -f "$cached"
    step_done "unpacking the cached bootstrap"
  else
    step "debootstrap --foreign --arch=arm64 --variant=minbase bookworm into $root, then its second stage emulated"
    bootstrap --arch=arm64 --foreign
    chroot "$root" /debootstrap/debootstrap --second-stage >"$root.second-stage.log" 2>&1 || {
      tail -20 "$root.second-stage.log" >&2
      exit 1
    }
    rm -f "$root.second-stage.log"
    mkdir -p "$cache"
    tar -c -C "$root" -f "$cached.part" . && mv "$cached.part" "$cached"
    step_done "debootstrap (arm64, cached in $cached)"
  fi
else
  step "debootstrap --variant=minbase bookworm into $root"
  bootstrap
  step_done "debootstrap"
fi

# --- what every machine here has, whatever the project
rm -f "$root/etc/apt/sources.list"
rm -rf "$root/etc/apt/sources.list.d"
copy /etc/apt/sources.list /etc/apt/sources.list.d /etc/apt/apt.conf.d /etc/apt/keyrings /etc/apt/trusted.gpg.d
copy /usr/local/share/ca-certificates /etc/ssl/certs/ca-certificates.crt
copy /etc/resolv.conf /etc/hosts
copy /etc/pip.conf /etc/xdg/pip /root/.pip /root/.config/pip
[ -n "${PIP_CONFIG_FILE:-}" ] && copy "$PIP_CONFIG_FILE"
# Local wheel directories and file:// indexes named by pip's config or the environment, bound read-only.
for dir in $(python3 -m pip config list 2>/dev/null | sed -nE "s/^[^=]*\.(find-links|index-url|extra-index-url)='(.*)'$/\2/p") \
  ${PIP_FIND_LINKS:-} ${PIP_INDEX_URL:-} ${PIP_EXTRA_INDEX_URL:-}; do
  dir=${dir#file://}
  dir=${dir%/}
  # A PEP 503 index folder ".../simple" links to files beside it: bind the folder that holds both.
  [ "${dir##*/}" = simple ] && dir=${dir%/simple}
  case "$dir" in /*) if [ -d "$dir" ] && ! mountpoint -q "$root$dir"; then bind "$dir" ro; fi ;; esac
done
env_args=(HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 CI=true)
[ "$arch" = arm64 ] && env_args+=("KIOSK_DEMO_SLOW=$emulated_slow")
while IFS='=' read -r name value; do
  case "$name" in
    PIP_* | *_CA_* | *_CA_BUNDLE | *_CA_CERTS | http_proxy | https_proxy | no_proxy | HTTP_PROXY | HTTPS_PROXY | NO_PROXY)
      env_args+=("$name=$value") ;;
  esac
done < <(env)

mount -t proc proc "$root/proc" && mounts+=("$root/proc")
bind /sys
bind /dev
bind /dev/pts
bind /dev/shm

step "copying the checkout (git archive HEAD) to /root/kiosk"
mkdir -p "$root/root/kiosk"
git -C "$checkout" archive HEAD | tar -x -C "$root/root/kiosk"
step_done "copy"

run_in_root() {  # run_in_root NAME COMMAND
  step "$1: $2"
  if chroot "$root" /usr/bin/env -i "${env_args[@]}" /bin/bash -c "cd /root/kiosk && $2" </dev/null; then
    step_done "$1"
  else
    local status=$?
    echo "== fresh-root: $1 FAILED (exit $status) after $(($(date +%s) - step_started)) s" >&2
    exit "$status"
  fi
}
size_mb() { du -sxm "$root" | cut -f1; }
before_mb=$(size_mb)
if [ "$arch" = arm64 ]; then
  run_in_root "demo command (arm64, emulated)" "${commands[0]}"
  echo "== fresh-root: the first command grew the root by $(($(size_mb) - before_mb)) MB"
  run_in_root "smoke check (arm64, emulated)" "bash scripts/smoke.sh aarch64"
  echo "== fresh-root: the README's first command and the smoke check passed on an emulated Debian bookworm arm64"
  exit 0
fi
run_in_root "demo command" "${commands[0]}"
echo "== fresh-root: the first command grew the root by $(($(size_mb) - before_mb)) MB"
run_in_root "test command" "${commands[1]}"
echo "== fresh-root: both README commands passed on a fresh Debian bookworm"
