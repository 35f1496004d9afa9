"""Where a step was asked to run from: the Airflow run, or the CLI, and why."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class RunContext:
    """Provenance carried into MLflow tags and decision records."""

    dag_id: str = "cli"
    run_id: str = ""
    trigger_reason: str = "manual"
    dry_run: bool = False
    force: bool = False
    evidence_uri: str = ""

    def __post_init__(self) -> None:
        if not self.run_id:
            object.__setattr__(
                self, "run_id", f"cli__{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunContext:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
