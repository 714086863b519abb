#!/usr/bin/env bash
# Make .venv-agents: the real livekit-agents framework for the conformance tests, pinned in
# agents/requirements.txt. It pins its own livekit, so it cannot share .venv. A no-op while the pins are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-agents
requirements=agents/requirements.txt
stamp="$venv/.requirements"
if [ -x "$venv/bin/python" ] && cmp -s "$requirements" "$stamp"; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -r "$requirements"
cp "$requirements" "$stamp"
echo "setup-agents: ready ($venv: $(grep -v '^#' "$requirements" | tr '\n' ' '))"
