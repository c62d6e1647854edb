"""PipeMaxConfig: every PipeMax option, validated once, frozen, passed whole.

Three ways in, one object out:
    CLI      python -m pipemax_sglang.launch_server ... --pipemax-selector greedy
    kwargs   pipemax_sglang.Engine(..., pipemax_selector="greedy", disable_pipemax=False)
    env      PIPEMAX_CONFIG (JSON) in each spawned SGLang scheduler process
The entry points build it BEFORE any SGLang process starts; a bad value, or a bad combination
with SGLang's own arguments, raises ConfigError with a one-line reason (the CLI exits 2 with it).

No sglang or torch import here: the launcher validates flags in milliseconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

SELECTORS = ("greedy", "fcfs", "shortest", "oldest", "none")
STREAM_MODES = ("auto", "always", "never")
_KWARG_PREFIX = "pipemax_"
_DISABLE = "disable_pipemax"


class ConfigError(ValueError):
    """A PipeMax option, or its combination with SGLang's arguments, is invalid."""


@dataclass(frozen=True)
class PipeMaxConfig:
    # --disable-pipemax: stock SGLang through the same entry points (side-by-side baselines).
    enabled: bool = True
    # Host (CPU) KV capacity for parked requests, per PP stage: at most one of the two.
    host_kv_gb: float | None = None
    host_kv_tokens: int | None = None
    # Which policy picks the requests that rejoin a micro-batch (core/ selectors).
    selector: str = "greedy"
    # Fraction of each prefetch budget held back for misprediction of step and link times.
    budget_margin: float = 0.1
    # Throttle host<->device copies to this many GB/s per direction (CPU runs: makes the
    # budget bind as PCIe would). None: no throttle.
    emulate_link_gbps: float | None = None
    # Whether a pressed micro-batch parks its rows after each turn so that others stream in
    # (core/decider.py): auto decides from the measured price of a move, always / never force it.
    stream: str = "auto"
    # Seconds of pending work without progress after which PipeMax hands its parked requests
    # back to SGLang's own path and steps aside (core/watchdog.py); 0 disables.
    watchdog_s: float = 30.0
    # Write each stage's batch composition per step to status_dir (tests check PP agreement).
    record_batches: bool = False
    # Where each scheduler process writes its status JSON; set by the entry points.
    status_dir: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        def bad(flag: str, why: str) -> ConfigError:
            return ConfigError(f"--pipemax-{flag} {why}")

        if self.host_kv_gb is not None and self.host_kv_tokens is not None:
            raise ConfigError("--pipemax-host-kv-gb and --pipemax-host-kv-tokens are exclusive: give one")
        if self.host_kv_gb is not None and not (math.isfinite(self.host_kv_gb) and self.host_kv_gb > 0):
            raise bad("host-kv-gb", f"must be a positive number of GB, got {self.host_kv_gb}")
        if self.host_kv_tokens is not None and self.host_kv_tokens <= 0:
            raise bad("host-kv-tokens", f"must be a positive token count, got {self.host_kv_tokens}")
        if self.selector not in SELECTORS:
            raise bad("selector", f"must be one of {', '.join(SELECTORS)}, got {self.selector!r}")
        if self.stream not in STREAM_MODES:
            raise bad("stream", f"must be one of {', '.join(STREAM_MODES)}, got {self.stream!r}")
        if not (0.0 <= self.budget_margin < 1.0):
            raise bad("budget-margin", f"must be in [0, 1), got {self.budget_margin}")
        if self.emulate_link_gbps is not None and not (
            math.isfinite(self.emulate_link_gbps) and self.emulate_link_gbps > 0
        ):
            raise bad("emulate-link-gbps", f"must be a positive number of GB/s, got {self.emulate_link_gbps}")
        if not (math.isfinite(self.watchdog_s) and self.watchdog_s >= 0):
            raise bad("watchdog-s", f"must be a number of seconds >= 0 (0 disables), got {self.watchdog_s}")
        if not self.enabled:
            # The link emulation describes the machine, not PipeMax: stock SGLang's HiCache
            # copies run through it too, so side-by-side runs share one link.
            changed = [f.name for f in _USER_FIELDS if f.name not in ("enabled", "emulate_link_gbps")
                       and getattr(self, f.name) != f.default]
            if changed:
                flags = ", ".join(_flag(n) for n in changed)
                raise ConfigError(f"{flags} has no effect with --disable-pipemax: drop one or the other")

    # ---- construction ----------------------------------------------------------------
    @classmethod
    def from_cli(cls, argv: list[str]) -> tuple["PipeMaxConfig", list[str]]:
        """Take the --pipemax-* flags (and --disable-pipemax) out of argv; return the rest."""
        parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
        add_cli_args(parser)
        try:
            ns, rest = parser.parse_known_args(argv)
        except argparse.ArgumentError as e:  # a value of the wrong type: one line, not usage
            raise ConfigError(str(e)) from None
        leftovers = [a for a in rest if a.startswith("--pipemax")]
        if leftovers:
            raise ConfigError(f"unknown PipeMax flag {leftovers[0].split('=')[0]}")
        values = {f.name: getattr(ns, f.name) for f in _USER_FIELDS if f.name != "enabled"}
        return cls(enabled=not ns.disable_pipemax, status_dir=ns.status_dir, **values), rest

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> tuple["PipeMaxConfig", dict[str, Any]]:
        """Split Engine keyword arguments: pipemax_<field> / disable_pipemax vs SGLang's own."""
        names = {f.name for f in _USER_FIELDS} | {"status_dir"}
        values: dict[str, Any] = {}
        rest: dict[str, Any] = {}
        for key, value in kwargs.items():
            if key == _DISABLE:
                values["enabled"] = not value
            elif key.startswith(_KWARG_PREFIX):
                name = key[len(_KWARG_PREFIX):]
                if name not in names or name == "enabled":
                    raise ConfigError(f"unknown PipeMax option {key}")
                values[name] = value
            else:
                rest[key] = value
        return cls(**values), rest

    def engine_kwargs(self) -> dict[str, Any]:
        """The Engine keyword arguments that rebuild this config (from_kwargs' inverse), for
        entry points that parsed the CLI and then start an Engine (run_batch)."""
        out: dict[str, Any] = {_DISABLE: not self.enabled}
        out.update({_KWARG_PREFIX + f.name: getattr(self, f.name) for f in _USER_FIELDS if f.name != "enabled"})
        out[_KWARG_PREFIX + "status_dir"] = self.status_dir
        return out

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "PipeMaxConfig":
        return cls(**json.loads(text))

    def with_status_dir(self, path: str) -> "PipeMaxConfig":
        return dataclasses.replace(self, status_dir=path)

    def decider(self):
        """The decider's part of the config (core.DeciderConfig)."""
        from pipemax_sglang.core.decider import DeciderConfig

        return DeciderConfig(self.selector, self.stream, self.budget_margin)

    def public_dict(self) -> dict[str, Any]:
        """The options as a user gave them (status endpoints show this)."""
        return {f.name: getattr(self, f.name) for f in _USER_FIELDS}

    # ---- combination with SGLang's arguments -----------------------------------------
    def check_server_args(self, server_args: Any) -> None:
        """Reject combinations SGLang would accept but PipeMax cannot honour.

        `server_args` is anything with SGLang's ServerArgs attribute names.
        """
        if not self.enabled:
            return
        if getattr(server_args, "disable_radix_cache", False):
            raise ConfigError(
                "PipeMax parks KV in SGLang's radix tree: it cannot run with --disable-radix-cache "
                "(add --disable-pipemax for stock SGLang)"
            )


    def sglang_overrides(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """SGLang arguments PipeMax needs, given those the user set (name -> value; absent or
        None = not set). A user value that contradicts one raises ConfigError.

        - the hierarchical cache is PipeMax's host tier, written through, so a parked
          request's KV is on host before its device copy may be evicted;
        - page size 1: a parked request's whole KV must be keyable radix nodes (a partial
          page would stay request-owned);
        - pp_size 1 runs SGLang's non-overlapped loop: a request is parked between steps,
          never while its previous step is still being scheduled;
        - most-recently-used eviction, unless chosen: the micro-batch that just ran is the
          one whose next turn is furthest away;
        - the host capacity, from --pipemax-host-kv-gb (GB) or --pipemax-host-kv-tokens.
        """
        if not self.enabled:
            return {}
        out: dict[str, Any] = {}

        def need(name: str, value: Any, why: str) -> None:
            if given.get(name) is not None and given[name] != value:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"PipeMax needs {flag} {value} ({why}); got {given[name]}")
            out[name] = value

        need("enable_hierarchical_cache", True, "its host tier is SGLang's hierarchical cache")
        need("hicache_write_policy", "write_through", "parked KV must reach host before eviction")
        need("page_size", 1, "a parked request's whole KV must be radix nodes")
        if (given.get("pp_size") or 1) == 1:
            need("disable_overlap_schedule", True, "requests are parked between steps")
        if given.get("radix_eviction_policy") is None:
            out["radix_eviction_policy"] = "mru"
        if self.host_kv_gb is not None:
            need("hicache_size", max(1, math.ceil(self.host_kv_gb)), "--pipemax-host-kv-gb")
        elif self.host_kv_tokens is not None:
            device = given.get("max_total_tokens")
            if not device:
                raise ConfigError("--pipemax-host-kv-tokens needs --max-total-tokens (or use --pipemax-host-kv-gb)")
            need("hicache_ratio", self.host_kv_tokens / device, "--pipemax-host-kv-tokens")
        return out


_USER_FIELDS = tuple(f for f in dataclasses.fields(PipeMaxConfig) if f.name != "status_dir")


def _flag(name: str) -> str:
    return "--pipemax-" + name.replace("_", "-")


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    """The PipeMax flags, for parsing and for --help."""
    g = parser.add_argument_group("PipeMax")
    g.add_argument("--disable-pipemax", action="store_true",
                   help="Run stock SGLang through the same entry point (for side-by-side baselines).")
    g.add_argument(_flag("host_kv_gb"), dest="host_kv_gb", type=float, default=None,
                   help="Host memory for parked requests' KV, GB per pipeline stage.")
    g.add_argument(_flag("host_kv_tokens"), dest="host_kv_tokens", type=int, default=None,
                   help="Host memory for parked requests' KV, in tokens (exclusive with --pipemax-host-kv-gb).")
    g.add_argument(_flag("selector"), dest="selector", default="greedy",
                   help=f"Rejoin policy: {', '.join(SELECTORS)} (default greedy: the two-stage greedy).")
    g.add_argument(_flag("budget_margin"), dest="budget_margin", type=float, default=0.1,
                   help="Fraction of each prefetch budget held back as safety margin, in [0, 1).")
    g.add_argument(_flag("emulate_link_gbps"), dest="emulate_link_gbps", type=float, default=None,
                   help="Throttle host<->device KV copies to this many GB/s per direction.")
    g.add_argument(_flag("stream"), dest="stream", default="auto",
                   help="Stream parked rows through the micro-batches: auto (default: when the measured "
                        "price of a move pays for it), always, or never (park only when a step does not fit).")
    g.add_argument(_flag("watchdog_s"), dest="watchdog_s", type=float, default=30.0,
                   help="Seconds of pending work without progress after which PipeMax hands its parked "
                        "requests back to SGLang and steps aside (default 30; 0 disables).")
    g.add_argument(_flag("record_batches"), dest="record_batches", action="store_true",
                   help="Record every stage's batch composition per step in the status directory.")
    g.add_argument(_flag("status_dir"), dest="status_dir", default=None,
                   help="Directory for per-stage status files (default: a fresh temporary one).")
