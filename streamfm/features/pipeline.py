"""FeaturePipeline: the spec's builders over one FeatureSpace; RecordBatch -> CSR chunk."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from streamfm.csr import CSRChunk
from streamfm.errors import SpecError
from streamfm.features.base import FeatureBuilder
from streamfm.features.registry import ParsedBuilder, parse_builders
from streamfm.features.space import FeatureSpace


class FeaturePipeline:
    """Builders in spec order; builder i is feature group i of the space."""

    def __init__(self, builders: list[FeatureBuilder], space: FeatureSpace | None = None) -> None:
        self.builders = builders
        if space is None:
            space = FeatureSpace()
            for b in builders:
                space.add_group(b.name, reserve=b.reserved())
        self.space = space

    @classmethod
    def from_specs(cls, specs: list[dict[str, Any]] | list[ParsedBuilder]) -> FeaturePipeline:
        """New builders for a spec's `features` list (mappings with a `type`, validated here),
        or for entries validated already (`registry.parse_builders`)."""
        if not all(isinstance(s, ParsedBuilder) for s in specs):
            specs = parse_builders(list(specs))
        return cls([p.make() for p in specs])

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
    def state_dict(self) -> dict[str, Any]:
        """The space and every builder's state."""
        return {
            "space": self.space.state_dict(),
            "builders": [b.state_dict() for b in self.builders],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned; SpecError if it was saved for other builders."""
        groups = list(state["space"]["groups"])
        if groups != [b.name for b in self.builders]:
            raise SpecError(
                f"saved feature groups {groups} differ from the spec's builders "
                f"{[b.name for b in self.builders]}"
            )
        self.space.load_state_dict(state["space"])
        for b, s in zip(self.builders, state["builders"], strict=True):
            b.load_state_dict(s)
