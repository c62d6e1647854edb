"""The SGLang pin. pipemax_sglang extends SGLang's internals (scheduler, radix cache, HiCache),
which change between releases, so it runs against exactly one version.

Checked before anything imports sglang (pipemax_sglang/sglang/__init__.py), reading the
installed distribution's metadata, so a mismatch fails in milliseconds with both versions named.
"""

from __future__ import annotations

from importlib import metadata

SGLANG_PIN = "0.5.23"


class SGLangVersionError(RuntimeError):
    pass


def installed_sglang_version() -> str | None:
    try:
        return metadata.version("sglang")
    except metadata.PackageNotFoundError:
        return None


def check_sglang_version() -> None:
    found = installed_sglang_version()
    if found != SGLANG_PIN:
        raise SGLangVersionError(
            f"pipemax_sglang requires sglang=={SGLANG_PIN}, but "
            + (f"sglang=={found} is installed" if found else "sglang is not installed")
            + f"; install the pinned version (CPU: make venv; GPU: pip install \".[gpu]\")"
        )
