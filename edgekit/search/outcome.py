"""What happened to one candidate of a search (its build, its measured row, its verdict)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.search.space import Spec


@dataclass
class Outcome:
    """What happened to one candidate."""

    spec: Spec
    status: str = (
        "pending"  # measured | rejected | build_failed | not_extended | not_proposed | out_of_time | not_runnable
    )
    reason: str | None = None
    build: dict[str, Any] = field(default_factory=dict)
    row: Any = None  # the harness VariantRow once measured
    resumed: bool = False

    def as_dict(self, root: Path) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.spec.name,
            "runtime": self.spec.runtime,
            "precision": self.spec.precision,
            "techniques": self.spec.techniques,
            "peer": self.spec.peer,
            "parents": list(self.spec.parents),
            "status": self.status,
            "reason": self.reason,
            "build_s": self.build.get("build_s"),
            "resumed": self.resumed,
        }
        if self.build.get("path"):
            d["artifact"] = rel(Path(self.build["path"]), root)
        if self.row is not None:
            row = dataclasses.asdict(self.row)
            for k in ("name", "runtime", "precision", "techniques", "artifact"):
                row.pop(k, None)
            d.update(row)
        return d


def rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)
