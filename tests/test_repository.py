"""The repository stands alone: every design note the code cites is in docs/, and nothing
points outside the clone (a user's checkout has no sibling folders next to it)."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# build outputs and environments are not the project's text (and are git-ignored)
SKIP_DIRS = {".git", ".venv", "build", "dist", "bench-results", "__pycache__", ".pytest_cache",
             ".hypothesis"}
TEXT_SUFFIXES = {".py", ".md", ".txt", ".toml", ".sh", ".pth", ".cfg", ".ini", ".yaml", ".yml"}


def _text_files() -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in filenames:
            path = Path(dirpath) / name
            if path.suffix in TEXT_SUFFIXES or name == "Makefile":
                out.append(path)
    return out


def test_no_reference_leaves_the_clone():
    outside = "../" + "shared"          # spelled apart so this file does not match itself
    hits = [str(p.relative_to(ROOT)) for p in _text_files() if outside in p.read_text(errors="ignore")]
    assert hits == []


def test_every_cited_design_note_exists():
    cited = set()
    for path in _text_files():
        cited |= set(re.findall(r"\bdocs/([\w.-]+\.md)\b", path.read_text(errors="ignore")))
    assert "design.md" in cited
    missing = sorted(name for name in cited if not (ROOT / "docs" / name).is_file())
    assert missing == []
