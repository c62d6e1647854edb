"""The HTTP server: SGLang's own (http_server.launch_server), plus PipeMax's JSON endpoint.

    GET /pipemax/status  -> {"enabled", "config", "stages": [one report per scheduler process]}

Only SGLang's HTTP path is supported: gRPC, Ray and encoder-only launches are refused before
anything starts, because PipeMax's scheduler is installed through the HTTP path's processes.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from pipemax_sglang.config import ConfigError, PipeMaxConfig
from pipemax_sglang.runtime.status import StatusBoard
from pipemax_sglang.sglang import platform
from pipemax_sglang.sglang.version import check_sglang_version


def _refuse_unsupported(server_args) -> None:
    for flag in ("grpc_mode", "smg_grpc_mode", "use_ray", "encoder_only"):
        if getattr(server_args, flag, False):
            raise ConfigError(f"pipemax_sglang serves over SGLang's HTTP server only: --{flag.replace('_', '-')} is not supported")


def add_routes(app, config: PipeMaxConfig) -> None:
    async def pipemax_status():
        return {
            "enabled": config.enabled,
            "config": config.public_dict(),
            "stages": StatusBoard.read(config.status_dir),
        }

    app.add_api_route("/pipemax/status", pipemax_status, methods=["GET"])


def run(config: PipeMaxConfig, sglang_argv: list[str]) -> int:
    """Parse SGLang's flags, check the combination, then serve until stopped. Returns exit code."""
    check_sglang_version()
    platform.check_platform(config)
    from pipemax_sglang.sglang.launch_args import server_args_from_cli
    from sglang.srt.utils import kill_process_tree

    server_args = server_args_from_cli(config, sglang_argv)
    _refuse_unsupported(server_args)

    owned_dir = None
    if config.status_dir is None:
        owned_dir = tempfile.mkdtemp(prefix="pipemax-status-")
        config = config.with_status_dir(owned_dir)
    from sglang.srt.entrypoints import http_server

    add_routes(http_server.app, config)
    ranks = platform.local_rank_count(
        server_args.pp_size, server_args.tp_size, server_args.dp_size or 1, server_args.nnodes
    )
    try:
        with platform.launch_environment(config, ranks):
            http_server.launch_server(server_args)
    finally:
        kill_process_tree(os.getpid(), include_parent=False)
        if owned_dir:
            shutil.rmtree(owned_dir, ignore_errors=True)
    return 0
