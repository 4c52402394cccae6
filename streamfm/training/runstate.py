"""RunState: where a training run stands — epoch, source and replay positions, row counters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def _fresh_stream() -> dict[str, Any]:
    return {"done": [], "current": None}


def _fresh_replay() -> dict[str, int]:
    return {"chunks": 0, "bytes": 0}


@dataclass
class RunState:
    """The counters and positions of a run (all of it checkpointed).

    `stream` is the source stream's progress in this epoch ({"done": [paths], "current":
    Position dict or None}); `replay` the position in the chunk cache in epochs > 1;
    `next_eval` the learnt-row count of the next cadence evaluation (None: epoch ends only).
    """

    epoch: int = 0
    complete: bool = False
    stream: dict[str, Any] = field(default_factory=_fresh_stream)
    replay: dict[str, int] = field(default_factory=_fresh_replay)
    rows_read: int = 0
    rows_learnt: int = 0
    next_eval: int | None = None
    # Bytes of every file learnt, when it was (a file that changes after is an error).
    learnt_sizes: dict[str, int] = field(default_factory=dict)

    def next_epoch(self) -> None:
        """Start the next epoch from the beginning of the source (or of the cache)."""
        self.epoch += 1
        self.stream = _fresh_stream()
        self.replay = _fresh_replay()

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "complete": self.complete,
            "stream": self.stream,
            "replay": self.replay,
            "rows_read": self.rows_read,
            "rows_learnt": self.rows_learnt,
            "next_eval": self.next_eval,
            "learnt_sizes": self.learnt_sizes,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.complete = int(state["epoch"]), bool(state["complete"])
        self.stream = state["stream"]
        self.replay = state["replay"]
        self.rows_read, self.rows_learnt = int(state["rows_read"]), int(state["rows_learnt"])
        self.next_eval = state["next_eval"]
        self.learnt_sizes = {str(k): int(v) for k, v in state.get("learnt_sizes", {}).items()}
