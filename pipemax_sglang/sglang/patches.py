"""Apply or check the unified diffs in patches/ against the installed (pinned) sglang.

    python -m pipemax_sglang.sglang.patches --check   # dry run: every patch still applies
    python -m pipemax_sglang.sglang.patches --apply   # apply them (none needed today)

Patches are a last resort (patches/README.md); this module is how they are kept honest.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

PATCH_DIR = Path(__file__).resolve().parents[2] / "patches"


def site_root() -> Path:
    spec = importlib.util.find_spec("sglang")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("sglang is not installed")
    return Path(next(iter(spec.submodule_search_locations))).parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipemax_sglang.sglang.patches")
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true")
    mode.add_argument("--apply", action="store_true")
    args = ap.parse_args(argv)
    patches = sorted(PATCH_DIR.glob("*.patch"))
    root = site_root()
    failed = 0
    for patch in patches:
        cmd = ["patch", "-p1", "--forward", "--silent", "-d", str(root), "-i", str(patch)]
        if args.check:
            cmd.append("--dry-run")
        ok = subprocess.run(cmd, capture_output=True, text=True).returncode == 0
        print(f"{'ok  ' if ok else 'FAIL'} {patch.name}")
        failed += not ok
    print(f"{len(patches)} patch(es) against sglang in {root}: {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
