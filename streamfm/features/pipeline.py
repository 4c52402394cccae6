"""FeaturePipeline: the spec's builders over one FeatureSpace; RecordBatch -> CSR chunk."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from streamfm.csr import CSRChunk
from streamfm.errors import SpecError
from streamfm.features.base import FeatureBuilder, make_builder
from streamfm.space import FeatureSpace


class FeaturePipeline:
    """Builders in spec order; builder i is feature group i of the space."""

    def __init__(self, builders: list[FeatureBuilder], space: FeatureSpace | None = None) -> None:
        names = [b.name for b in builders]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SpecError(
                f"features: builder names must be unique; repeated: {dupes} (set 'name')"
            )
        if not builders:
            raise SpecError("features: at least one feature builder is needed")
        self.builders = builders
        if space is None:
            space = FeatureSpace()
            for b in builders:
                space.add_group(b.name, reserve=b.reserved())
        self.space = space

    @classmethod
    def from_specs(cls, specs: list[dict[str, Any]]) -> FeaturePipeline:
        """Builders from the spec's `features` list (mappings with a `type`)."""
        return cls([make_builder(s, i) for i, s in enumerate(specs)])

    def columns(self) -> list[str]:
        """Every input column any builder reads, in first-use order."""
        seen: dict[str, None] = {}
        for b in self.builders:
            for c in b.columns():
                seen.setdefault(c, None)
        return list(seen)

    def transform(self, batch: pa.RecordBatch, *, training: bool) -> CSRChunk:
        """Design-matrix rows of `batch` over global ids (training=True lets state and ids grow)."""
        blocks = [b.build(batch, training=training) for b in self.builders]
        return self.space.to_chunk(blocks, list(range(len(blocks))), training=training)

    def group_of_ids(self, start: int, stop: int) -> np.ndarray:
        """Feature group (builder index) of global ids [start, stop)."""
        return self.space.id_group[start:stop]

    def feature_name(self, fid: int) -> str:
        """'group=key' name of global id `fid`."""
        group, key = self.space.describe(fid, self.builders)
        return f"{group}={key}"

    # --- state
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta, arrays = self.space.state()
        meta["builders"] = [b.state_dict() for b in self.builders]
        return meta, arrays

    def load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.space = FeatureSpace.from_state(meta, arrays)
        if self.space.groups != [b.name for b in self.builders]:
            raise SpecError(
                f"saved feature groups {self.space.groups} differ from the spec's builders "
                f"{[b.name for b in self.builders]}"
            )
        for b, s in zip(self.builders, meta["builders"], strict=True):
            b.load_state_dict(s)
