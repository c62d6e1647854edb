"""How the runner is stopped outside its event loop: SIGINT, SIGTERM and SIGQUIT raise Interrupted.

From the first line of run_batch.main to the engine's shutdown, a stop signal unwinds the stack
(so `finally` blocks shut the engine down and the summary is printed) instead of killing the
process on the spot. While the run loop turns, the loop's own handlers take over (batch_runner);
nothing written is ever at risk either way, since every record is already whole in the file.
SIGQUIT is here because SGLang sends it to this process when one of its children dies, and its
default action would end the runner with a core dump instead of a summary.
"""

from __future__ import annotations

import signal


class Interrupted(BaseException):
    """A stop signal arrived; BaseException, so no `except Exception` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def raise_on_signals() -> None:
    def handler(signum, frame):
        raise Interrupted(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
        signal.signal(sig, handler)
