"""FeaturePipeline: the spec's builders over one FeatureSpace; RecordBatch -> CSR chunk."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from streamfm.csr import CSRChunk
from streamfm.errors import SpecError
from streamfm.features.base import FeatureBuilder, expand_presets, make_builder
from streamfm.space import FeatureSpace
from streamfm.state import join_arrays, split_arrays


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
        """Builders from the spec's `features` list (mappings with a `type`; presets expanded)."""
        return cls([make_builder(s, i) for i, s in enumerate(expand_presets(specs))])

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

    def feature_name(self, fid: int) -> str:
        """Readable name of global id `fid`: 'group=key' for keyed features; a reserved
        feature's own name (e.g. a numeric column), prefixed by its group unless it starts so."""
        g = int(self.space.id_group[fid])
        group, name = self.space.describe(fid, self.builders)
        base, size = self.space.reserved[g]
        if base <= fid < base + size:
            return name if name.startswith(group) else f"{group}:{name}"
        return f"{group}={name}"

    # --- state
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-able meta, arrays): the space and every builder's state. numpy arrays inside a
        builder's state are stored as arrays (not JSON), referenced by name from the meta."""
        meta, arrays = self.space.state()
        meta["builders"] = [
            split_arrays(b.state_dict(), f"builder{i}", arrays) for i, b in enumerate(self.builders)
        ]
        return meta, arrays

    def load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.space = FeatureSpace.from_state(meta, arrays)
        if self.space.groups != [b.name for b in self.builders]:
            raise SpecError(
                f"saved feature groups {self.space.groups} differ from the spec's builders "
                f"{[b.name for b in self.builders]}"
            )
        for b, s in zip(self.builders, meta["builders"], strict=True):
            b.load_state_dict(join_arrays(s, arrays))
