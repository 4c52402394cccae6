"""spec.yaml: the contract of a training run. Everything the CLI does can be written here.

    spec = load_spec("spec.yaml", overrides=["learner.learning_rate=0.05"])

Relative paths in a spec are relative to the current working directory.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from streamfm.config import (
    STREAMING_METHODS,
    GroupRegularization,
    LearnerConfig,
    ModelConfig,
    SourceConfig,
    StrictModel,
    format_validation_error,
)
from streamfm.errors import SpecError
from streamfm.metrics import (
    CLASSIFICATION_METRICS,
    RANKING_METRICS,
    REGRESSION_METRICS,
    SAMPLED_RANKING_METRICS,
)
from streamfm.sources.discovery import STDIN

# Spec sections that must not change between a checkpoint and its resumption: they decide what
# the model is and how each update is made. Sources, validation, output may change.
RESUME_FIXED_SECTIONS = (
    "task",
    "target",
    "features",
    "model",
    "learner",
    "groups",
    "cache",
    "ranking",
)


class TargetConfig(StrictModel):
    """The column to learn; for classification, which values mean class 1."""

    column: str = Field(description="name of the target column (libFM files: label)")
    positive: list[str | int | float | bool] | None = Field(
        None,
        description="classification: values that mean class 1 (all others 0); default: "
        "the labels must be 0/1, -1/+1 or true/false",
    )


class ValidationConfig(StrictModel):
    """Holdout evaluation and early stopping."""

    source: SourceConfig | None = None
    every_rows: int = Field(
        0,
        ge=0,
        description="also evaluate after every N training rows, exactly (counted over all "
        "epochs; 0: epoch ends only); one that falls on an epoch's end is that epoch's record",
    )
    metric: str | None = Field(
        None,
        description="default: rmse (regression), logloss (classification), ndcg (ranking: "
        "ndcg, recall, precision, mrr or auc, at ranking.k)",
    )
    split: Literal["leave_last_out"] | None = Field(
        None,
        description="ranking: hold out each key's last event of the training source (a first "
        "pass over the source finds them; not for stdin or follow) instead of a validation "
        "source",
    )
    key: str | None = Field(
        None, description="split leave_last_out: the builder whose key the split is per (a user)"
    )
    patience: int = Field(
        0, ge=0, description="stop after this many evaluations without improvement (0: never)"
    )
    restore_best: bool | None = Field(
        None,
        description="save the model of the best evaluation rather than the last (default: only "
        "with early stopping, patience > 0)",
    )
    cache_rows: int = Field(
        2_000_000,
        ge=0,
        description="keep the built holdout in memory when it has at most this many rows",
    )


class OutputConfig(StrictModel):
    """Where a run writes its model and metric history."""

    dir: str = Field("runs/{spec}", description="{spec} is the spec file's name without extension")
    model: str = Field("model.sfm", description="model file name in dir (published at checkpoints)")
    quarantine: str = Field(
        "quarantine.jsonl", description="bad rows file in dir (on_bad_rows: quarantine)"
    )
    window_rows: int = Field(
        0, ge=0, description="also record progressive metrics over the last N cases (0: off)"
    )
    progress_every_seconds: float = Field(1.0, gt=0)


class CheckpointConfig(StrictModel):
    """Checkpoints for exact resume (`streamfm train SPEC --resume`)."""

    enabled: bool = True
    dir: str | None = Field(None, description="default: {output.dir}/checkpoints")
    every_rows: int = Field(0, ge=0, description="checkpoint every N learnt rows (0: off)")
    every_seconds: float = Field(0.0, ge=0, description="checkpoint every N seconds (0: off)")
    keep: int = Field(3, ge=1, description="how many checkpoints to keep")
    publish: bool = Field(
        True, description="also write the current model to output.model at each checkpoint"
    )


class CacheConfig(StrictModel):
    """Chunk cache: built design-matrix chunks stored on disk in the first epoch, replayed after."""

    enabled: bool | None = Field(None, description="default: on when epochs > 1")
    dir: str | None = Field(None, description="default: checkpoint.dir (the chunks.npy file)")


class DistributedConfig(StrictModel):
    """Data-parallel training on a Dask cluster (`streamfm train SPEC --cluster ...`)."""

    scheduler: str | None = Field(
        None, description="address of a Dask scheduler, e.g. tcp://host:8786 (null: local)"
    )
    workers: int = Field(
        2,
        ge=1,
        description="shares the files are dealt into (tasks per round), and the worker "
        "processes of a local cluster",
    )
    sync_every_rows: int = Field(
        100_000,
        ge=1,
        description="rows each worker learns between two parameter averagings (and checkpoints)",
    )


class NegativesConfig(StrictModel):
    """Task ranking: how negatives are drawn for each positive event (causal, seeded)."""

    sampler: Literal["uniform", "popularity"] = Field(
        "uniform",
        description="uniform over the items seen in earlier events, or in proportion to their "
        "positive events so far (popularity); never the positive itself",
    )
    per_positive: int = Field(1, ge=1, le=1000, description="negatives per positive event")
    candidates: int = Field(
        1,
        ge=1,
        le=1000,
        description="adaptive sampling: each negative is the highest scored (by the model "
        "before the event's steps) of this many draws of `sampler` (the hard negatives of "
        "Rendle & Freudenthaler, WSDM 2014, by oversampling); 1: plain sampling",
    )
    exclude_seen: bool = Field(
        False,
        description="never draw an item among the user's last `recent` positives (needs "
        "ranking.user)",
    )
    recent: int = Field(
        50,
        ge=1,
        le=100_000,
        description="size of each user's recent-positive filter (exclude_seen, and the items "
        "excluded from holdout ranking): memory is users × recent × 4 bytes",
    )
    max_tries: int = Field(
        20,
        ge=1,
        le=10_000,
        description="draws per negative before giving up on it (a positive then has fewer "
        "negatives; only when almost every item is excluded)",
    )


class RankingConfig(StrictModel):
    """Task ranking: which builders describe the item; everything else is the context."""

    item: str = Field(description="name of the builder of the item id")
    item_features: list[str] = Field(
        default_factory=list,
        description="names of further builders keyed by the item (e.g. a join on the item "
        "table): negatives take these entries from the item catalogue",
    )
    user: str | None = Field(
        None,
        description="name of the builder of the user id (exclude_seen, per-user AUC, the items "
        "excluded from holdout ranking); default: the first builder that is not item-side",
    )
    loss: Literal["bpr", "logistic"] = Field(
        "bpr",
        description="bpr: pairwise, maximise ln σ(ŷ(pos) − ŷ(neg)); logistic: pointwise with "
        "sampled negatives (positives y=1, negatives y=0)",
    )
    negatives: NegativesConfig = Field(default_factory=NegativesConfig)
    k: int = Field(10, ge=1, le=100_000, description="cut-off of the holdout metrics @k")


class Spec(StrictModel):
    """The whole spec.yaml."""

    source: SourceConfig
    task: Literal["regression", "classification", "ranking"] = Field(
        "regression",
        description="regression: squared loss; classification: logistic loss (als, mcmc: "
        "probit); ranking: implicit feedback, every row a positive event (docs/ranking.md)",
    )
    target: TargetConfig | None = Field(
        None,
        description="a column name, or {column, positive}; ranking: optional, only rows whose "
        "target is in target.positive are positives",
    )
    features: list[dict[str, Any]] = Field(
        default_factory=list,
        description="feature builders, each {type: ..., ...} (libFM sources default to [libfm])",
    )
    model: ModelConfig = Field(default_factory=ModelConfig)
    learner: LearnerConfig = Field(default_factory=LearnerConfig)
    groups: dict[str, GroupRegularization] = Field(
        default_factory=dict,
        description="per feature group (builder name) L2 overrides: {user: {factors: 0.05}}",
    )
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    ranking: RankingConfig | None = Field(
        None, description="task ranking: the item side of a row and the negatives"
    )
    distributed: DistributedConfig | None = Field(
        None, description="train on a Dask cluster (see docs/distributed.md)"
    )
    name: str = Field("run", description="run name; set from the spec file's name by load_spec")
    _builders: list | None = PrivateAttr(default=None)

    @field_validator("target", mode="before")
    @classmethod
    def _target_str(cls, v):
        return {"column": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _defaults_and_checks(self) -> Spec:
        libfm = self.source.format == "libfm" or (
            self.source.format is None and _looks_libfm(self.source.path)
        )
        if self.target is None and self.task != "ranking":
            if not libfm:
                raise ValueError("target: required key is missing (the column to learn)")
            self.target = TargetConfig(column="label")
        if not self.features and libfm:
            self.features = [{"type": "libfm"}]
        if not self.features:
            raise ValueError("features: at least one feature builder is needed")
        allowed = {
            "regression": REGRESSION_METRICS,
            "classification": CLASSIFICATION_METRICS,
            "ranking": RANKING_METRICS,
        }[self.task]
        if self.validation.metric is None:
            self.validation.metric = allowed[0]
        elif self.validation.metric not in allowed:
            raise ValueError(
                f"validation.metric: must be one of {allowed} for {self.task}, got {self.validation.metric!r}"
            )
        if self.validation.restore_best is None:
            self.validation.restore_best = self.validation.patience > 0
        method = self.learner.method
        paths = self.source.path if isinstance(self.source.path, list) else [self.source.path]
        if method not in STREAMING_METHODS and (self.source.follow or STDIN in paths):
            where = "source.follow" if self.source.follow else "standard input (source.path: -)"
            raise ValueError(
                f"learner.method: {method} needs all training rows at once (it sweeps over the "
                f"columns of the whole training set), so it cannot learn from {where}. For "
                "continual learning use method sgd, adagrad or sgda; or train "
                f"{method} on files and start a streaming run from its model with "
                "model.init_from: <its model.sfm>"
            )
        if self.source.follow and self.learner.epochs != 1:
            raise ValueError("learner.epochs: must be 1 with source.follow (a stream is read once)")
        if self.task == "ranking":
            self._check_ranking(method)
        elif self.ranking is not None:
            raise ValueError("ranking: only for task ranking")
        elif self.validation.split is not None:
            raise ValueError("validation.split: only for task ranking")
        if (
            self.target is not None
            and self.target.positive is not None
            and self.task not in ("classification", "ranking")
        ):
            raise ValueError("target.positive: only for task classification or ranking")
        return self

    def _check_ranking(self, method: str) -> None:
        r = self.ranking
        if r is None:
            raise ValueError(
                "ranking: required for task ranking, e.g. ranking: {item: <the item builder's "
                "name>}"
            )
        if method not in ("sgd", "adagrad"):
            raise ValueError(
                f"learner.method: task ranking learns with sgd or adagrad, not {method}"
            )
        if self.learner.threads > 1:
            # The ranking kernels grow the item catalogue as they go, which threads would race
            # on; one thread (and the learner's Hogwild note) would otherwise pass unsaid.
            raise ValueError(
                f"learner.threads: task ranking learns on one thread, not "
                f"{self.learner.threads} (its kernels add items to the catalogue as events "
                "arrive); set threads to 1"
            )
        if self.target is not None and self.target.positive is None:
            raise ValueError(
                "target.positive: task ranking with a target column needs the values that mean "
                "a positive event (e.g. positive: [4, 5]); without a target every row is one"
            )
        names = [b.get("name") or b.get("type") for b in self.features if isinstance(b, dict)]
        # (the builders' own names, as parsed; the raw entries' names if they do not parse)
        with contextlib.suppress(SpecError):  # reported by parse_spec with its own message
            names = [b.name for b in self.builders()]
        for key, value in (
            ("ranking.item", r.item),
            *((f"ranking.item_features[{i}]", v) for i, v in enumerate(r.item_features)),
            ("ranking.user", r.user),
            ("validation.key", self.validation.key),
        ):
            if value is not None and value not in names:
                raise ValueError(f"{key}: {value!r} names no feature builder (builders: {names})")
        item_side = [r.item, *r.item_features]
        if len(set(item_side)) != len(item_side):
            raise ValueError("ranking.item_features: lists a builder twice or the item builder")
        context = [n for n in names if n not in item_side]
        if not context:
            raise ValueError(
                "ranking: every builder is item-side; a context (e.g. the user) is needed"
            )
        if r.user is not None and r.user in item_side:
            raise ValueError(f"ranking.user: {r.user!r} is an item-side builder")
        if r.user is None:
            r.user = context[0]
        if self.validation.split is not None:
            if self.validation.source is not None:
                raise ValueError("validation.split: give a validation source or a split, not both")
            if self.validation.key is None:
                self.validation.key = r.user
            paths = self.source.path if isinstance(self.source.path, list) else [self.source.path]
            if self.source.follow or STDIN in paths:
                raise ValueError(
                    "validation.split: leave_last_out reads the source twice (the first pass "
                    "finds each key's last event), so not with source.follow or stdin; give "
                    "a validation.source instead"
                )
        elif self.validation.key is not None:
            raise ValueError("validation.key: only with validation.split")

    def builders(self) -> list:
        """The `features` entries validated (`features.registry.ParsedBuilder`, presets expanded),
        parsed once."""
        if self._builders is None:
            from streamfm.features.registry import parse_builders

            self._builders = parse_builders(self.features)
        return self._builders

    def metric_names(self) -> tuple[str, ...]:
        """Progressive metrics of the task (ranking: of the positive among its sampled
        negatives; its holdout metrics are `holdout_metric_names`)."""
        if self.task == "ranking":
            return SAMPLED_RANKING_METRICS
        return REGRESSION_METRICS if self.task == "regression" else CLASSIFICATION_METRICS

    def target_columns(self) -> list[str]:
        """The target column (none for task ranking without a target)."""
        return [self.target.column] if self.target is not None else []

    def holdout_metric_names(self) -> tuple[str, ...]:
        return RANKING_METRICS if self.task == "ranking" else self.metric_names()

    def has_holdout(self) -> bool:
        """Whether runs of this spec evaluate on a holdout (a source or a split)."""
        return self.validation.source is not None or self.validation.split is not None

    def output_dir(self) -> Path:
        return Path(self.output.dir.replace("{spec}", self.name))

    def checkpoint_dir(self) -> Path:
        return (
            Path(self.checkpoint.dir) if self.checkpoint.dir else self.output_dir() / "checkpoints"
        )


def _looks_libfm(path: str | list[str]) -> bool:
    first = path[0] if isinstance(path, list) else path
    return str(first).lower().split(".gz")[0].endswith((".libfm", ".libsvm", ".svm"))


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply `key.path=value` (value parsed as YAML: numbers, booleans, lists) to nested `data`."""
    if "=" not in assignment:
        raise SpecError(f"--set {assignment!r}: expected key.path=value")
    path, _, raw = assignment.partition("=")
    keys = [k for k in path.strip().split(".") if k]
    if not keys:
        raise SpecError(f"--set {assignment!r}: empty key")
    value = _typed(raw)
    node: Any = data
    for i, key in enumerate(keys[:-1]):
        if isinstance(node, list):
            node = node[_list_index(node, key, keys[: i + 1])]
            continue
        if not isinstance(node.get(key), dict | list):
            node[key] = {}
        node = node[key]
    last = keys[-1]
    if isinstance(node, list):
        node[_list_index(node, last, keys)] = value
    else:
        node[last] = value


def _typed(raw: str) -> Any:
    """A --set value: YAML decides numbers, booleans, null and explicit [..] / {..}; anything else
    is the text as typed ("-" for stdin, "|" as a delimiter, "a: b"), unless the user quoted it."""
    text = raw.strip()
    try:
        value = yaml.safe_load(raw) if text else ""
    except yaml.YAMLError:
        return raw
    if isinstance(value, list | dict):
        return value if text.startswith(("[", "{")) else raw
    if isinstance(value, str) or value is None:
        quoted = text[:1] in ("'", '"')
        return value if quoted or text.lower() in ("null", "~", "") else raw
    return value


def _list_index(node: list, key: str, path: list[str]) -> int:
    try:
        i = int(key)
        node[i]
    except (ValueError, IndexError):
        raise SpecError(f"--set: {'.'.join(path)}: not an index of a list of {len(node)}") from None
    return i


def _unshare(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _unshare(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_unshare(v) for v in node]
    return node


def parse_spec(data: dict[str, Any], *, name: str = "run", origin: str = "spec") -> Spec:
    """Validate a spec mapping; SpecError names every bad key path."""
    if not isinstance(data, dict):
        raise SpecError(
            f"{origin}: a spec is a mapping of sections (source, target, features, ...)"
        )
    data = {"name": name, **data}
    try:
        spec = Spec(**data)
    except ValidationError as exc:
        raise SpecError(f"{origin}: {format_validation_error(exc, model=Spec)}") from None
    # Builders validate their own parameters: parse them now, so errors surface at load time.
    try:
        spec.builders()
    except SpecError as exc:
        raise SpecError(f"{origin}: {exc}") from None
    return spec


def spec_difference(saved: dict[str, Any], now: dict[str, Any]) -> tuple[str, Any, Any] | None:
    """(key path, saved value, current value) of the first difference between two dumped specs
    in the sections a resumed run must keep (`RESUME_FIXED_SECTIONS`; learner.epochs and
    learner.threads may change),
    or None."""
    for section in RESUME_FIXED_SECTIONS:
        a, b = (
            _with_defaults(section, saved.get(section)),
            _with_defaults(section, now.get(section)),
        )
        if section == "learner":  # more or fewer epochs (or threads) is fine
            a, b = (
                {k: v for k, v in (d or {}).items() if k not in ("epochs", "threads")}
                for d in (a, b)
            )
        diff = _first_difference(a, b, section)
        if diff is not None:
            return diff
    return None


def _with_defaults(section: str, dumped: Any) -> Any:
    """A dumped model or learner section as today's code dumps it (keys added since the
    checkpoint was written get their defaults; optimizer and method are one setting)."""
    config = {"model": ModelConfig, "learner": LearnerConfig}.get(section)
    if config is None or not isinstance(dumped, dict):
        return dumped
    try:
        return config(**dumped).model_dump(mode="json")
    except ValidationError:
        return dumped


def _first_difference(a: Any, b: Any, path: str) -> tuple[str, Any, Any] | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            d = _first_difference(a.get(k), b.get(k), f"{path}.{k}")
            if d is not None:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            d = _first_difference(x, y, f"{path}[{i}]")
            if d is not None:
                return d
        return None
    return None if a == b else (path, a, b)


# A spec is a few hundred values; anchors and aliases may repeat parts of it, but a spec that
# expands to more than this many values is refused (a few hundred bytes of nested aliases can
# stand for gigabytes: a "billion laughs" document).
MAX_SPEC_VALUES = 100_000


class _SpecLoader(yaml.SafeLoader):
    """yaml.safe_load's loader; `_check_nodes` runs on its node graph before construction."""


def _decode_spec(raw: bytes, path: Path) -> str:
    """The spec's text: UTF-8 (a BOM is allowed), or UTF-16/32 with a BOM."""
    import codecs

    for bom, encoding in (
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if raw.startswith(bom):
            try:
                return raw.decode(encoding)
            except UnicodeDecodeError as exc:
                raise SpecError(
                    f"{path}: not valid {encoding.upper()} text at byte {exc.start}; save the "
                    "spec as UTF-8"
                ) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SpecError(
            f"{path}: line {line}: not UTF-8 text (byte {raw[exc.start]:#04x} at offset "
            f"{exc.start}); save the spec as UTF-8"
        ) from None


def _check_nodes(root: yaml.Node, path: Path) -> None:
    """SpecError for a duplicate key in a mapping, an alias inside its own anchor, or a
    document that expands to more than MAX_SPEC_VALUES values."""
    size: dict[int, int] = {}  # expanded size of each node done
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_nodes: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_nodes.discard(key)
            total = 1 + sum(size[id(c)] for c in _children(node))
            if total > MAX_SPEC_VALUES:
                raise SpecError(
                    f"{path}: the spec expands to more than {MAX_SPEC_VALUES:,} values through "
                    "its anchors and aliases (&name / *name); write it out plainly"
                )
            size[key] = total
            continue
        if key in size:
            continue
        if key in open_nodes:
            raise SpecError(
                f"{path}: line {node.start_mark.line + 1}: an anchor refers to itself through "
                "an alias (a recursive structure); a spec must be a finite tree"
            )
        if isinstance(node, yaml.MappingNode):
            _check_duplicate_keys(node, path)
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_duplicate_keys(node: yaml.MappingNode, path: Path) -> None:
    seen: dict[tuple[str, str], int] = {}
    for key_node, _value in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
            continue
        ident = (key_node.tag, key_node.value)
        line = key_node.start_mark.line + 1
        if ident in seen:
            raise SpecError(
                f"{path}: line {line}: key '{key_node.value}' appears twice in the same mapping "
                f"(first on line {seen[ident]}); keep one"
            )
        seen[ident] = line


def _parse_yaml(text: str, path: Path) -> Any:
    """The YAML document of a spec, checked by `_check_nodes` before it is built."""
    loader = _SpecLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return {}
        _check_nodes(node, path)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load_spec(path: str | os.PathLike, overrides: list[str] | None = None) -> Spec:
    """Read spec.yaml, apply `--set` overrides, validate."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"cannot read spec {path}: {exc.strerror or exc}") from None
    text = _decode_spec(raw, path)
    try:
        data = _parse_yaml(text, path) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(f"{path}:{where} not valid YAML: {getattr(exc, 'problem', exc)}") from None
    # YAML anchors make several keys share one object: copy so that --set changes one key only.
    data = _unshare(data)
    for assignment in overrides or []:
        apply_override(data, assignment)
    return parse_spec(data, name=path.stem, origin=str(path))
