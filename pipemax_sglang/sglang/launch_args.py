"""SGLang's command-line flags, plus what PipeMax needs, as one ServerArgs.

Shared by the entry points that take a command line and start SGLang (launch_server, run_batch),
so both apply the same CPU defaults and the same PipeMax requirements in the same order:

    argv -> CPU defaults (platform) -> PipeMax's overrides checked against the user's flags
         -> SGLang's own parser (prepare_server_args) -> overrides set -> combination checked

A bad SGLang flag exits through SGLang's argparse (usage, exit 2); a bad combination with
PipeMax raises ConfigError. No process is started here.
"""

from __future__ import annotations

from pipemax_sglang.config import PipeMaxConfig
from pipemax_sglang.sglang import platform
from pipemax_sglang.sglang.version import check_sglang_version

check_sglang_version()

from sglang.srt.plugins import load_plugins
from sglang.srt.server_args import ServerArgs, prepare_server_args


def server_args_from_cli(config: PipeMaxConfig, sglang_argv: list[str]) -> ServerArgs:
    load_plugins()   # hooks on ServerArgs must be in place before it is built (as Engine does)
    argv = platform.cpu_cli_defaults(sglang_argv)
    overrides = config.sglang_overrides(platform.argv_values(argv))
    server_args = prepare_server_args(argv)
    # set as attributes (allowed before resolution, as sglang's run_server does): some values
    # PipeMax needs are not offered as CLI choices (radix eviction "mru")
    for name, value in overrides.items():
        setattr(server_args, name, value)
    config.check_server_args(server_args)
    return server_args
