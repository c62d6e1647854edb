"""`python -m pipemax_sglang.launch_server`: SGLang's server with PipeMax inside.

Accepts every `python -m sglang.launch_server` flag, plus the `--pipemax-*` flags
(and --disable-pipemax). The PipeMax flags and the SGLang pin are checked first, in
milliseconds, before sglang is even imported; a bad value exits 2 with a one-line reason.
"""

from __future__ import annotations

import sys

from pipemax_sglang.config import ConfigError, PipeMaxConfig, add_cli_args

PROG = "python -m pipemax_sglang.launch_server"


def _print_help() -> None:
    import argparse

    from sglang.srt.server_args import ServerArgs

    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    ServerArgs.add_cli_args(parser)
    add_cli_args(parser)
    parser.print_help()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    from pipemax_sglang.sglang.version import SGLangVersionError, check_sglang_version

    try:
        check_sglang_version()
        if "-h" in argv or "--help" in argv:
            _print_help()
            return 0
        config, rest = PipeMaxConfig.from_cli(argv)
        from pipemax_sglang.sglang import server

        return server.run(config, rest)
    except (ConfigError, SGLangVersionError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
