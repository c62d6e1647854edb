"""EngineProcess: a pipemax_sglang.Engine living in its own Python process.

Why not in the pytest process: when an SGLang child dies, SGLang's watchdog signals the
Engine's process, whose handler kills that whole process tree (docs/sglang-on-cpu.md,
"Quirks"). Hosting the Engine in a child makes such a crash an EngineCrashed in the test that
caused it, while pytest and the other tests go on.

    with EngineProcess(model_path=..., pp_size=2) as eng:
        outs = eng.generate(input_ids=[[1, 2, 3]], sampling_params={...})
        eng.status()
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from typing import Any

START_TIMEOUT_S = 300
CALL_TIMEOUT_S = 600


class EngineCrashed(RuntimeError):
    pass


def _serve(conn, kwargs: dict[str, Any]) -> None:
    try:
        from pipemax_sglang import Engine

        engine = Engine(**kwargs)
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    conn.send(("ready", None))
    while True:
        method, args, kw = conn.recv()
        if method == "shutdown":
            engine.shutdown()
            conn.send(("ok", None))
            return
        try:
            if method == "generate":
                result = engine.generate(*args, **kw)
            elif method == "status":
                result = engine.pipemax_status()
            elif method == "server_info":
                result = engine.get_server_info()
            elif method == "flush_cache":
                result = engine.flush_cache()
            elif method == "pids":
                import psutil

                result = [p.pid for p in psutil.Process().children(recursive=True)]
            else:
                raise ValueError(f"unknown method {method}")
            conn.send(("ok", _plain(result)))
        except BaseException:
            conn.send(("error", traceback.format_exc()))


def _plain(obj: Any) -> Any:
    """Results as picklable builtins (meta_info may hold SGLang-specific objects)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)


class EngineProcess:
    def __init__(self, **engine_kwargs: Any) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, engine_kwargs), daemon=False)
        self._proc.start()
        child.close()
        kind, payload = self._recv(START_TIMEOUT_S)
        if kind != "ready":
            self._proc.join(10)
            raise EngineCrashed(f"engine failed to start:\n{payload}")

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _recv(self, timeout: float):
        if not self._conn.poll(timeout):
            self.kill()
            raise EngineCrashed(f"engine process gave no answer within {timeout} s")
        try:
            return self._conn.recv()
        except (EOFError, ConnectionError):
            self._proc.join(10)
            raise EngineCrashed(f"engine process died (exit code {self._proc.exitcode})") from None

    def call(self, method: str, *args: Any, timeout: float = CALL_TIMEOUT_S, **kwargs: Any) -> Any:
        try:
            self._conn.send((method, args, kwargs))
        except (BrokenPipeError, ConnectionError, OSError):
            self._proc.join(10)
            raise EngineCrashed(f"engine process died (exit code {self._proc.exitcode})") from None
        kind, payload = self._recv(timeout)
        if kind == "error":
            raise RuntimeError(f"engine call {method} failed:\n{payload}")
        return payload

    def generate(self, **kwargs: Any) -> list[dict]:
        out = self.call("generate", **kwargs)
        return out if isinstance(out, list) else [out]

    def status(self) -> dict:
        return self.call("status")

    def close(self) -> None:
        if self._proc.is_alive():
            try:
                self.call("shutdown", timeout=120)
            except EngineCrashed:
                pass
        self._proc.join(30)
        if self._proc.is_alive():
            self.kill()

    def kill(self) -> None:
        import psutil

        try:
            parent = psutil.Process(self._proc.pid)
            procs = parent.children(recursive=True) + [parent]
        except psutil.NoSuchProcess:
            return
        for p in procs:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=10)

    def __enter__(self) -> "EngineProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
