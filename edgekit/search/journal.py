"""The search journal: one JSON object per line in ``OUT/journal.jsonl``, appended and flushed
as each candidate is built or judged, so an interrupted search resumes where it stopped."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: list[dict[str, Any]] = []
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    self.entries.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut short by the interruption
                    break

    def write(self, event: str, name: str, **fields: Any) -> None:
        entry = {"event": event, "candidate": name, **fields}
        self.entries.append(entry)
        with open(self.path, "a") as f:
            f.write(json.dumps(entry, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def last(self, event: str, name: str) -> dict[str, Any] | None:
        for e in reversed(self.entries):
            if e["event"] == event and e["candidate"] == name:
                return e
        return None
