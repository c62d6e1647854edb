"""StatusBoard: how each SGLang scheduler process tells the front end what PipeMax is doing.

Every PP stage runs its own scheduler process, and only stage 0 talks to the tokenizer; the
later stages have no channel back to it outside the token ring. So each scheduler process
writes one JSON document to a shared directory (the same pattern as SGLang's multiprocess
Prometheus files), and readers (the /pipemax/status endpoint, Engine.pipemax_status) collect
them. Writes are atomic (write a temp file, rename), so a reader never sees half a document.

    <status_dir>/stage-pp{pp_rank}-tp{tp_rank}.json   one per scheduler process
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


class StatusBoard:
    def __init__(self, directory: str, pp_rank: int, tp_rank: int) -> None:
        self.directory = Path(directory)
        self.path = self.directory / f"stage-pp{pp_rank}-tp{tp_rank}.json"
        self.directory.mkdir(parents=True, exist_ok=True)

    def publish(self, payload: dict[str, Any]) -> None:
        # json.dumps, not json.dump: dump streams through the pure-Python encoder, a write a
        # chunk; dumps encodes in C and writes once (0.36 against 0.55 ms for a busy report
        # here, 1.5 against 3.7 ms for an idle one with its step samples)
        text = json.dumps(payload, sort_keys=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, self.path)

    @staticmethod
    def read(directory: str | None) -> list[dict[str, Any]]:
        """All stages' documents, ordered by (pp_rank, tp_rank); [] if none yet."""
        if not directory or not os.path.isdir(directory):
            return []
        docs = []
        for path in sorted(Path(directory).glob("stage-pp*-tp*.json")):
            try:
                docs.append(json.loads(path.read_text()))
            except (OSError, json.JSONDecodeError):  # replaced between glob and read
                continue
        return sorted(docs, key=lambda d: (d.get("pp_rank", 0), d.get("tp_rank", 0)))
