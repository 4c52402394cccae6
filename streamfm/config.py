"""Pydantic models of configuration: the single source of truth for every setting.

`streamfm.spec` assembles these sections into the whole spec.yaml; estimators validate their
hyper-parameters through `ModelConfig` and `LearnerConfig`.
"""

from __future__ import annotations

import re
import types
import typing
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

# Seeds are mixed as unsigned 64-bit words; below 2**63 they are also valid int64 values.
MAX_SEED = 2**63 - 1


def _admits_bool(annotation: Any) -> bool:
    """Whether a field's type accepts true/false (bool itself, Any, or a union holding them)."""
    if annotation is bool or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return any(_admits_bool(a) for a in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _admits_bool(typing.get_args(annotation)[0])
    return False


def refuse_bool_for_numbers(model: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    """`k: true` must not mean k = 1: true/false are refused where no boolean is expected
    (pydantic's lax mode would read them as 1 and 0)."""
    if isinstance(value, bool) and info.field_name is not None:
        field = model.model_fields.get(info.field_name)
        if field is not None and not _admits_bool(field.annotation):
            raise ValueError("must be a number, not true/false")
    return value


class StrictModel(BaseModel):
    """Base of all config sections: unknown keys are errors, values are validated on assignment;
    numbers must be finite (no .inf / .nan) and true/false are not numbers."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        return refuse_bool_for_numbers(cls, value, info)


class CsvOptions(StrictModel):
    """How CSV (and TSV) text is parsed."""

    encoding: str = Field(
        "utf-8", description="text encoding, e.g. latin-1 (ASCII-compatible encodings only)"
    )

    @field_validator("encoding")
    @classmethod
    def _ascii_compatible(cls, v: str) -> str:
        import codecs

        try:
            codecs.lookup(v)
        except LookupError:
            raise ValueError(f"unknown encoding {v!r}") from None
        if '\n,"'.encode(v, errors="strict") != b'\n,"':
            raise ValueError(f"{v!r} is not ASCII-compatible (use utf-8, latin-1, cp1252, ...)")
        return v

    delimiter: str = Field(",", min_length=1, max_length=1)
    header: bool = Field(True, description="first line holds the column names")
    column_names: list[str] | None = Field(
        None, description="names of the columns when there is no header (or to replace it)"
    )
    quote_char: str | None = Field(
        '"', min_length=1, max_length=1, description="quote character; null disables quoting"
    )
    null_values: list[str] = Field(
        default_factory=lambda: ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "?"],
        description="strings read as missing",
    )
    column_types: dict[str, str] = Field(
        default_factory=dict,
        description="force a column's type, e.g. {user: string, rating: float32}",
    )
    skip_lines: int = Field(
        0,
        ge=0,
        description="lines to ignore at the start of every file, before the header (a title or "
        "a comment); physical lines, blank ones included, quotes not looked at",
    )
    trim_whitespace: bool = Field(
        False,
        description="remove spaces and tabs around every field outside quotes, header included "
        "(files written as 'a, b, c'); null_values then match the trimmed text",
    )


SourceFormat = Literal["parquet", "csv", "libfm", "jsonl"]


class SourceConfig(StrictModel):
    """Where rows come from: a file, a glob, a folder, a list of those, or '-' for standard input."""

    path: str | list[str] = Field(description="file, glob (sorted), folder (recursive), list, or -")
    format: SourceFormat | None = Field(
        None, description="inferred from the file extension when omitted"
    )
    csv: CsvOptions = Field(default_factory=CsvOptions)
    batch_size: int = Field(65536, gt=0, description="rows per batch (at most)")
    prefetch: int = Field(
        2,
        ge=0,
        le=64,
        description="training source: batches read, parsed and built in a background thread "
        "ahead of the learner (0: off; off anyway with follow, standard input and "
        "validation.every_rows); the model is the same either way (a validation source ignores it)",
    )
    on_bad_rows: Literal["fail", "skip", "quarantine"] = Field(
        "fail",
        description="a malformed row: stop with file/row/reason, skip it (counted), or skip it and "
        "write it with the reason to output.quarantine",
    )
    follow: bool = Field(
        False,
        description="after the files present, keep watching path (a folder or glob) and learn "
        "each new complete file once (continual learning)",
    )
    poll_seconds: float = Field(1.0, gt=0, description="follow: how often to look for new files")
    idle_timeout: float | None = Field(
        None,
        gt=0,
        description="follow: stop after this many seconds without a new file (null: never)",
    )
    max_line_bytes: int = Field(
        16 << 20,
        ge=1024,
        description="longest line (CSV: record) read: JSON lines and libFM lines longer are bad "
        "rows; CSV is read in blocks at least this large",
    )

    @field_validator("path")
    @classmethod
    def _non_empty(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and not v:
            raise ValueError("must name at least one file, glob or folder")
        if isinstance(v, str) and not v.strip():
            raise ValueError("must not be empty")
        return v


class ModelConfig(StrictModel):
    """Shape and initialisation of the factorization machine."""

    k: int = Field(8, ge=0, le=4096, description="number of latent factors")
    init_std: float = Field(0.1, ge=0.0, description="std of the Gaussian initial factors")
    seed: int = Field(
        0, ge=0, le=MAX_SEED, description="drives initialisation, shuffling: everything random"
    )
    init_from: str | None = Field(
        None,
        description="warm start: a model file written by `streamfm train` (any method) whose "
        "feature vocabularies and parameters this run starts from (same features and k)",
    )


class GroupRegularization(StrictModel):
    """L2 strengths for one feature group (overrides the learner's reg_linear / reg_factors)."""

    linear: float | None = Field(None, ge=0.0)
    factors: float | None = Field(None, ge=0.0)


Method = Literal["sgd", "adagrad", "sgda", "als", "mcmc"]
#: Methods that learn case by case from a stream (the others need all training rows at once).
STREAMING_METHODS = ("sgd", "adagrad", "sgda")


class McmcConfig(StrictModel):
    """MCMC (Bayesian FM by Gibbs sampling): burn-in, the samples kept, the hyper-priors.

    Hyper-prior defaults are libFM's: noise precision α ~ Gamma(alpha_0/2, gamma_0/2); per group
    λ ~ Gamma(alpha_0/2, gamma_0/2) and μ | λ ~ N(mu_0, 1/(beta_0 λ)). w0's prior precision is
    learner.reg_bias (0: flat, as libFM).
    """

    burn_in: int = Field(
        0,
        ge=0,
        description="iterations whose samples are left out of the averaged predictions (libFM: 0)",
    )
    samples_kept: int = Field(
        20,
        ge=1,
        le=10_000,
        description="thinned samples stored in the model file; predictions on new data average "
        "over them (the holdout during training averages every sample, as libFM)",
    )
    thinning: int | None = Field(
        None,
        ge=1,
        description="keep every n-th sample after burn_in (the latest samples_kept); null: "
        "spread samples_kept evenly over the iterations after burn_in",
    )
    group_priors: bool = Field(
        True,
        description="one prior (μ, λ) per feature group (builder); false: one prior shared by all "
        "features (libFM without -meta)",
    )
    alpha_0: float = Field(1.0, gt=0.0, description="hyper-prior shape (libFM: 1)")
    gamma_0: float = Field(1.0, gt=0.0, description="hyper-prior rate (libFM: 1)")
    beta_0: float = Field(1.0, gt=0.0, description="hyper-prior strength of mu_0 (libFM: 1)")
    mu_0: float = Field(0.0, description="hyper-prior mean of the μ's (libFM: 0)")


class SgdaConfig(StrictModel):
    """SGDA: SGD whose per-group regularisation is learnt on a validation slice of the stream."""

    validation_every: int = Field(
        10,
        ge=2,
        description="every n-th row of the stream is held out from the parameter steps and used "
        "for the regularisation steps instead",
    )
    validation_rows: int = Field(
        10_000,
        ge=1,
        description="the regularisation steps cycle over the latest this many held-out rows",
    )
    reg_learning_rate: float | None = Field(
        None, gt=0.0, description="step size of the regularisation values (null: learning_rate)"
    )
    steps: Literal["sgd", "adagrad"] = Field(
        "sgd",
        description="the parameters' step rule: sgd (Rendle's SGDA, libFM's) or adagrad "
        "(per-coordinate rates; the λ gradient uses each coordinate's rate)",
    )


class LearnerConfig(StrictModel):
    """How the parameters are learnt: per-case SGD (as libFM), AdaGrad, SGD with adaptive
    regularisation (SGDA), alternating least squares (ALS) or Gibbs sampling (MCMC)."""

    method: Method = Field(
        "sgd",
        description="sgd: libFM's per-case SGD; adagrad: per-coordinate step sizes; sgda: SGD "
        "learning its per-group regularisation on held-out rows; als: coordinate descent; mcmc: "
        "Bayesian FM by Gibbs sampling (als, mcmc: epochs are iterations over all rows, no "
        "learning rate; not for source.follow or stdin)",
    )
    optimizer: Literal["sgd", "adagrad"] | None = Field(
        None, description="older name of method (sgd or adagrad); set to method when it is one"
    )
    learning_rate: float = Field(0.01, gt=0.0, description="sgd, sgda: ~0.01; adagrad: ~0.1")
    schedule: Literal["constant", "invscaling"] = Field(
        "constant",
        description="invscaling: lr_t = learning_rate / (1 + decay * t) ** power_t, t = cases seen",
    )
    decay: float = Field(1e-6, ge=0.0, description="invscaling: how fast the rate falls per case")
    power_t: float = Field(0.5, ge=0.0, description="invscaling exponent")
    reg_bias: float = Field(
        0.0, ge=0.0, description="L2 on the global bias w0 (mcmc: w0's prior precision, 0 = flat)"
    )
    reg_linear: float = Field(
        0.0,
        ge=0.0,
        description="L2 on linear weights w: per case (sgd, adagrad), on the whole-data loss "
        "(als, as libFM's -regular), the start of the learnt values (sgda); mcmc samples it",
    )
    reg_factors: float = Field(0.01, ge=0.0, description="L2 on factors V (as reg_linear)")
    adagrad_init: float = Field(
        1.0,
        gt=0.0,
        description="AdaGrad: initial squared-gradient accumulator (keeps first steps sane)",
    )
    epochs: int = Field(10, ge=1)
    shuffle: bool = Field(False, description="estimators: visit rows in a seeded random order")
    shuffle_buffer: int = Field(
        0, ge=0, description="streaming: size of the bounded shuffle buffer in rows (0 = off)"
    )
    clip_predictions: bool = Field(
        True, description="regression: clip predictions to the [min, max] of targets seen so far"
    )
    threads: int = Field(
        1,
        ge=1,
        le=256,
        description="threads learning side by side. sgd, adagrad: Hogwild (each a contiguous "
        "slice of the chunk's cases, updating the shared w and V without locks): faster on "
        "several cores, but results are not bit for bit reproducible from run to run (1: the "
        "exact default). als, mcmc: each sweep's features in waves that share no row, a wave's "
        "features on the threads: the same model bit for bit as 1 thread",
    )
    mcmc: McmcConfig = Field(default_factory=McmcConfig)
    sgda: SgdaConfig = Field(default_factory=SgdaConfig)

    @model_validator(mode="before")
    @classmethod
    def _optimizer_is_an_alias(cls, data):
        """optimizer (the older key) and method name the same thing: fill one from the other."""
        if not isinstance(data, dict):
            return data
        method, optimizer = data.get("method"), data.get("optimizer")
        if method is not None and optimizer is not None and method != optimizer:
            raise ValueError(
                f"optimizer is the older name of method: they differ ({optimizer!r} and "
                f"{method!r}); give method only"
            )
        if method is None:  # an unknown optimizer is reported as such, not as a method
            method = optimizer if optimizer in ("sgd", "adagrad") else "sgd"
        if optimizer is None and method in ("sgd", "adagrad"):
            optimizer = method
        return {**data, "method": method, "optimizer": optimizer}

    @model_validator(mode="after")
    def _schedule_params(self) -> LearnerConfig:
        if self.schedule == "invscaling" and self.decay == 0.0:
            raise ValueError("schedule 'invscaling' needs decay > 0")
        if self.threads > 1 and self.method not in ("sgd", "adagrad", "als", "mcmc"):
            raise ValueError(
                f"threads > 1 is for methods sgd, adagrad, als and mcmc, not {self.method!r}: "
                "set threads to 1"
            )
        return self


class EstimatorConfig(ModelConfig, LearnerConfig):
    """Hyper-parameters of FMRegressor / FMClassifier: the model and learner settings of a spec
    (defaults chosen for data nobody has scaled: AdaGrad, standardised inputs, shuffled epochs;
    learning_rate and init_std on validation splits, see benchmarks/estimators.py), and how an
    estimator reads its X."""

    optimizer: Literal["sgd", "adagrad"] | None = Field(
        "adagrad",
        description="sgd: libFM's per-case SGD; adagrad: per-coordinate step sizes (None when "
        "method names another learner)",
    )
    learning_rate: float = Field(0.1, gt=0.0, description="sgd: ~0.01; adagrad: ~0.1")
    init_std: float = Field(0.01, ge=0.0, description="std of the Gaussian initial factors")
    shuffle: bool = Field(True, description="visit rows in a seeded random order every epoch")
    standardize: bool = Field(
        True,
        description="learn scales at the first fit / partial_fit: dense X columns to mean 0, std 1 "
        "(0/1 columns kept), sparse X columns divided by their largest |value|, DataFrame numeric "
        "columns through `numeric` builders with transform standardize; regression targets to "
        "mean 0, std 1 (predictions mapped back)",
    )
    features: list[dict[str, Any]] | None = Field(
        None,
        description="DataFrame X: feature builders as in a spec's `features` (default: one per "
        "column by its type)",
    )
    n_jobs: int | None = Field(
        None,
        description="threads (None: 1, -1: one per core). FMClassifier with 3+ classes: "
        "the one-vs-rest models learn side by side; one model (regression, two classes): "
        "learner.threads (sgd / adagrad: Hogwild, faster but not bit for bit reproducible when "
        "> 1; als / mcmc: the same model as one thread)",
    )

    @field_validator("n_jobs")
    @classmethod
    def _jobs(cls, v: int | None) -> int | None:
        if v is not None and (v == 0 or v < -1):
            raise ValueError("must be None, -1 or a positive number of threads")
        return v


def format_validation_error(exc, prefix: str = "", model: type[BaseModel] | None = None) -> str:
    """One clause per problem of a pydantic ValidationError: `key.path: what is wrong, got value`.

    With `model`, an unknown key gets a did-you-mean suggestion from the keys of its section.
    """
    lines: dict[str, str] = {}
    for err in exc.errors():
        # Union members and validators add type tags such as 'str' or 'list[str]' to the path.
        loc = [str(p) for p in err.get("loc", ()) if not _TYPE_TAG.match(str(p))]
        key = ".".join(p for p in (prefix, ".".join(loc)) if p)
        if key in lines:
            continue
        kind = err.get("type", "")
        ctx = err.get("ctx") or {}
        given = err.get("input")
        if kind == "extra_forbidden":
            msg = "unknown key" + _suggest(model, loc)
        elif kind == "missing":
            msg = "required key is missing"
        elif kind in _BOUNDS:
            msg = f"must be {_BOUNDS[kind]} {next(iter(ctx.values()))}, got {given!r}"
        elif kind == "literal_error":
            msg = f"must be one of {ctx.get('expected', '')}, got {given!r}"
        else:
            msg = err.get("msg", "invalid").removeprefix("Value error, ")
            # The input of a check of a whole section is the section: not worth repeating.
            if loc and not isinstance(given, dict):
                shown = repr(given)
                msg += f", got {shown if len(shown) <= 80 else shown[:77] + '...'}"
        lines[key] = f"{key}: {msg}" if key else msg
    return "; ".join(lines.values())


_TYPE_TAG = re.compile(r"^(__root__|str|int|float|bool|none|[a-z-]+\[.*\]|function-.*)$")


_BOUNDS = {
    "greater_than": ">",
    "greater_than_equal": ">=",
    "less_than": "<",
    "less_than_equal": "<=",
}


def _suggest(model: type[BaseModel] | None, loc: list[str]) -> str:
    """' (did you mean 'x'?)' for an unknown key at `loc`, looking through nested sections."""
    import difflib

    section = model
    for part in loc[:-1]:
        field = section.model_fields.get(part) if section else None
        ann = getattr(field, "annotation", None)
        section = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    if section is None or not loc:
        return ""
    close = difflib.get_close_matches(loc[-1], list(section.model_fields), n=1)
    known = ", ".join(section.model_fields)
    return f" (did you mean '{close[0]}'?)" if close else f" (known keys: {known})"
