"""Fail when a package of a virtual environment was built on this machine instead of installed from a wheel.

A kiosk installs in minutes only when every dependency comes as a wheel for its CPU (``manylinux_*_aarch64`` on a
Raspberry Pi) or as pure Python; a package pip had to compile locally (its ``WHEEL`` file then carries the bare
``linux_<machine>`` tag pip gives a local build) means a missing wheel: a slow, fragile install on every kiosk.
``systemd-python`` is the one known exception: it publishes no wheels at all and builds in about 45 s.

Usage: python scripts/check_wheels.py SITE_PACKAGES [--allow NAME ...]; exit 1 naming each locally built package.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

#: Packages that publish no wheel for any platform, so a local build is expected.
BUILT_HERE = frozenset({"systemd-python"})
_LOCAL = re.compile(r"-linux_[a-z0-9_]+$")


def locally_built(site_packages: Path, allow: frozenset[str] = BUILT_HERE) -> list[str]:
    """Names (with versions) of the distributions in ``site_packages`` whose wheel was built on this machine."""
    found = []
    for wheel in sorted(site_packages.glob("*.dist-info/WHEEL")):
        tags = [line.split(":", 1)[1].strip() for line in wheel.read_text().splitlines() if line.startswith("Tag:")]
        if not tags or not all(_LOCAL.search(tag) for tag in tags):
            continue
        name = _name(wheel.parent)
        if name.rsplit("==", 1)[0].lower().replace("_", "-") not in allow:
            found.append(f"{name} ({', '.join(tags)})")
    return found


def _name(dist_info: Path) -> str:
    metadata = dist_info / "METADATA"
    fields = dict(
        line.split(": ", 1) for line in metadata.read_text(errors="replace").splitlines()[:20] if ": " in line
    )
    return f"{fields.get('Name', dist_info.name)}=={fields.get('Version', '?')}"


def main(argv: list[str]) -> int:
    """Check one site-packages folder; print what was built here."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site_packages", type=Path)
    parser.add_argument("--allow", nargs="*", default=[], help="more packages that may be built here")
    args = parser.parse_args(argv)
    if not args.site_packages.is_dir():
        print(f"check_wheels: {args.site_packages} is not a folder", file=sys.stderr)
        return 2
    built = locally_built(args.site_packages, BUILT_HERE | {name.lower() for name in args.allow})
    if built:
        print("check_wheels: built on this machine, no wheel for it was found:", file=sys.stderr)
        for name in built:
            print(f"  {name}", file=sys.stderr)
        return 1
    print(f"check_wheels: every package in {args.site_packages} came as a wheel (allowed to build: "
          f"{', '.join(sorted(BUILT_HERE))})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
