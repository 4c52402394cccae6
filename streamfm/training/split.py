"""validation: {split: leave_last_out, key: ...}: each key's last event held out of training.

A first pass over the training source (before the first epoch) finds, for every key of the
`validation.key` builder (a user), its last usable positive event in stream order — for a
time-ordered log, its latest — and keeps those rows (the holdout). Memory: O(keys): a key ->
slot dictionary and one int64 per key during the pass, then the held-out rows themselves (one
per key). The training pass numbers the rows it reads in each epoch the same way and leaves the
held-out ones out before anything is built or learnt from them.

"Usable positive": rows the training pass would learn from — a valid target that is a positive
(every row without a target) and no value a builder refuses (`invalid_rows`); malformed rows the
reader drops are not counted by either pass. A key none of whose rows is usable has no holdout.

Everything is in the run's checkpoints (`state_dict`): the held-out row numbers (sorted int64),
the held-out rows (an Arrow IPC stream as uint8) and the row counter of the current epoch, so a
resumed run neither passes over the source again nor learns a held-out row.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamfm.errors import SpecError
from streamfm.features.arrow import as_string_keys, column, dictionary_codes
from streamfm.features.pipeline import FeaturePipeline
from streamfm.numpy_arrow import from_numpy
from streamfm.spec import Spec
from streamfm.training.targets import target_values


def key_values(builder, batch: pa.RecordBatch) -> pa.Array:
    """The split key of every row as a string (null: missing): the builder's own `keys` when
    it has them (categorical), else its input columns' values joined by \\x1f."""
    if hasattr(builder, "keys"):
        keys = builder.keys(batch)
        return keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    cols = [as_string_keys(column(batch, c, builder.name)) for c in builder.columns()]
    if len(cols) == 1:
        return cols[0]
    return pc.binary_join_element_wise(*cols, "\x1f")


class LeaveLastOut:
    """The leave-last-out split of a run: `scan` (the first pass), `take` (per training batch:
    the rows to learn), `table` (the held-out rows, in stream order)."""

    COMPACT_FLOOR = 1024  # pending rows beyond twice the keys before the pass compacts them

    def __init__(self, spec: Spec, pipeline: FeaturePipeline) -> None:
        self.spec = spec
        names = [b.name for b in pipeline.builders]
        key = spec.validation.key
        if key not in names:
            raise SpecError(f"validation.key: {key!r} names no feature builder (builders: {names})")
        self.builder = pipeline.builders[names.index(key)]
        self.pipeline = pipeline
        self.scanned = False
        self.rows = np.zeros(0, dtype=np.int64)  # held-out row numbers, sorted
        self.table: pa.Table | None = None
        self.epoch = 0
        self.position = 0  # rows of this epoch's stream read so far

    # ------------------------------------------------------------------ the first pass
    def usable(self, batch: pa.RecordBatch) -> np.ndarray:
        """Rows of `batch` the training pass would learn from (positives without bad values)."""
        y, bad, _ = target_values(batch, self.spec.target, "ranking")
        ok = ~bad & (y > 0)
        for b in self.pipeline.builders:
            for mask, _column, _why in b.invalid_rows(batch):
                ok &= ~mask
        return ok

    def scan(self, batches) -> None:
        """The first pass over (batch, position) pairs of the source: each key's last usable
        row. Held-out rows are gathered as the pass goes (the last per key of each batch,
        compacted when they outnumber twice the keys), so memory stays O(keys + batch)."""
        slots: dict[Any, int] = {}
        last = np.zeros(1024, dtype=np.int64)
        pending: list[pa.Table] = []
        pending_rows: list[np.ndarray] = []
        pending_slots: list[np.ndarray] = []
        n_pending = 0
        base = 0
        for batch, _pos in batches:
            n = batch.num_rows
            codes, uniques = dictionary_codes(key_values(self.builder, batch))
            ok = np.flatnonzero(self.usable(batch) & (codes >= 0))
            if len(ok):
                # the last usable row of each distinct key in this batch
                rev = ok[::-1]
                u, first = np.unique(codes[rev], return_index=True)
                where = np.sort(rev[first])
                batch_slots = np.empty(len(where), dtype=np.int64)
                for j, r in enumerate(where):
                    value = uniques[codes[r]]
                    s = slots.get(value)
                    if s is None:
                        s = slots[value] = len(slots)
                        if s >= len(last):
                            last = np.concatenate([last, np.zeros(len(last), dtype=np.int64)])
                    batch_slots[j] = s
                    last[s] = base + r
                pending.append(pa.Table.from_batches([batch.take(from_numpy(where))]))
                pending_rows.append(base + where)
                pending_slots.append(batch_slots)
                n_pending += len(where)
                if n_pending > 2 * len(slots) + self.COMPACT_FLOOR:
                    pending, pending_rows, pending_slots = self._compact(
                        pending, pending_rows, pending_slots, last
                    )
                    n_pending = len(pending_rows[0])
            base += n
        if pending:
            pending, pending_rows, _ = self._compact(pending, pending_rows, pending_slots, last)
            self.table, self.rows = pending[0], pending_rows[0]
        else:
            self.table, self.rows = None, np.zeros(0, dtype=np.int64)
        self.scanned = True

    @staticmethod
    def _compact(tables, rows, slots, last):
        t = pa.concat_tables(tables, promote_options="default")
        r = np.concatenate(rows)
        s = np.concatenate(slots)
        keep = np.flatnonzero(last[s] == r)  # rows are in increasing order already
        return [t.take(from_numpy(keep))], [r[keep]], [s[keep]]

    # ------------------------------------------------------------------ the training pass
    def take(
        self, batch: pa.RecordBatch, epoch: int, lines: Callable[[np.ndarray], np.ndarray]
    ) -> tuple[pa.RecordBatch, Callable[[np.ndarray], np.ndarray]]:
        """The batch (the next rows of epoch `epoch`'s stream) without its held-out rows, and
        `lines` for the rows that remain (bad-row messages name the right line)."""
        if epoch != self.epoch:
            self.epoch, self.position = epoch, 0
        n = batch.num_rows
        start = self.position
        self.position += n
        a, b = np.searchsorted(self.rows, [start, start + n])
        if a == b:
            return batch, lines
        held = self.rows[a:b] - start
        keep = np.ones(n, dtype=bool)
        keep[held] = False
        kept = np.flatnonzero(keep)
        return batch.filter(from_numpy(keep)), lambda idx: lines(kept[np.asarray(idx)])

    def state_position(self) -> tuple[int, int]:
        """(epoch, rows read in it): what `take` advances."""
        return self.epoch, self.position

    @property
    def n_held_out(self) -> int:
        return len(self.rows)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        buf = io.BytesIO()
        if self.table is not None:
            with pa.ipc.new_stream(buf, self.table.schema) as w:
                w.write_table(self.table)
        return {
            "scanned": self.scanned,
            "rows": self.rows.copy(),
            "table": np.frombuffer(buf.getvalue(), dtype=np.uint8).copy(),
            "epoch": self.epoch,
            "position": self.position,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        rows = np.asarray(state["rows"], dtype=np.int64)
        if len(rows) > 1 and np.any(np.diff(rows) <= 0):
            raise ValueError("the held-out row numbers are not increasing")
        data = np.asarray(state["table"], dtype=np.uint8)
        table = None
        if len(data):
            table = pa.ipc.open_stream(pa.py_buffer(data.tobytes())).read_all()
            if table.num_rows != len(rows):
                raise ValueError(
                    f"{table.num_rows} held-out rows but {len(rows)} held-out row numbers"
                )
        self.scanned = bool(state["scanned"])
        self.rows, self.table = rows, table
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
