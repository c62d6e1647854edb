"""ServerProcess: `python -m pipemax_sglang.launch_server` started for real, on a free port."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time

import psutil
import requests

START_TIMEOUT_S = 300


# Ports are drawn below the kernel's ephemeral range (32768-60999 on Linux). A port the kernel
# hands out for bind(0) is ephemeral: between our check and uvicorn's bind, the server's own
# start (gloo pairs, the torch TCPStore, ZMQ) may be given the same number, and uvicorn then
# fails with EADDRINUSE (seen in CI). SGLang derives its internal ports as port + 100..1000, so
# the window leaves room above.
PORT_RANGE = (20000, 30000)
START_ATTEMPTS = 3


def free_port() -> int:
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(*PORT_RANGE)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORT_RANGE}")


class ServerProcess:
    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.log = tempfile.NamedTemporaryFile("w+", prefix="pipemax-server-", suffix=".log", delete=False)
        for attempt in range(START_ATTEMPTS):
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            cmd = [sys.executable, "-m", "pipemax_sglang.launch_server", "--host", "127.0.0.1",
                   "--port", str(self.port), *args]
            self.log.seek(0)
            self.log.truncate()
            self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                         env={**os.environ, **(env or {})})
            try:
                self._wait_healthy()
                return
            except RuntimeError:
                # A port taken between our check and the server's bind is the harness's race,
                # not the server's failure: start again on another port. Anything else raises.
                if attempt + 1 == START_ATTEMPTS or "address already in use" not in self.tail(200):
                    raise
                self.stop()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode} during start:\n{self.tail()}")
            try:
                if requests.get(self.url + "/health", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"server not healthy after {START_TIMEOUT_S} s:\n{self.tail()}")

    def tail(self, n: int = 60) -> str:
        self.log.flush()
        with open(self.log.name) as f:
            return "".join(f.readlines()[-n:])

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self, timeout: float = 60) -> list[psutil.Process]:
        """SIGTERM the server; return the descendants that were still alive afterwards."""
        children = self.descendants()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        _, alive = psutil.wait_procs(children, timeout=timeout)
        for p in alive:
            p.kill()
        return alive

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        os.unlink(self.log.name)
