"""The `streamfm` command line (typer). Thin: parses arguments, calls the library, prints."""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

import streamfm
from streamfm.errors import SpecError, StreamFMError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Train factorization machines on streams of events, out of core.",
    pretty_exceptions_enable=False,
)

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"streamfm {streamfm.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug


def _fail(exc: BaseException) -> None:
    """Print an error as one paragraph and exit: 2 for spec/usage errors, 1 for the rest."""
    if _state["debug"]:
        traceback.print_exception(exc)
    for note in getattr(exc, "run_notes", []):  # e.g. which checkpoint was used or skipped
        typer.echo(f"note: {note}", err=True)
    if isinstance(exc, StreamFMError):
        msg = str(exc)
    elif type(exc).__module__.startswith("pyarrow"):
        msg = (
            f"the data could not be read or converted ({exc}); check source.format and the "
            "csv options (delimiter, encoding, column_types); --debug shows where"
        )
    elif isinstance(exc, OSError):
        msg = f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}"
    else:
        msg = f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)"
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(2 if isinstance(exc, SpecError) else 1)


def _run(fn):
    try:
        return fn()
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes one readable paragraph
        _fail(exc)


SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a spec key: --set learner.learning_rate=0.05"),
]


@app.command()
def train(
    spec: Annotated[Path, typer.Argument(help="spec.yaml")],
    set_: SetOption = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the latest good checkpoint.")
    ] = False,
    follow: Annotated[
        bool, typer.Option("--follow", help="Keep learning from new files (source.follow).")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Train a model as the spec says; writes the model and metric history to output.dir."""
    _skip_numba_blas_probe()
    from streamfm.progress import ProgressPrinter
    from streamfm.training.loop import train as run_train

    overrides = [*(set_ or []), *(["source.follow=true"] if follow else [])]
    result = _run(
        lambda: run_train(spec, overrides, progress=ProgressPrinter(quiet=quiet), resume=resume)
    )
    for note in result.summary.get("notes", []):
        typer.echo(f"note: {note}", err=True)
    s = result.summary
    typer.echo(
        f"trained {s['rows_learnt']:,} rows ({s['rows_read']:,} read, {s['rows_skipped']:,} skipped, "
        f"{s['rows_quarantined']:,} quarantined; {s['epochs']} epoch(s)) in {s['seconds']:.2f} s, "
        f"{s['rows_per_second'] or 0:,.0f} rows/s; {s['features']:,} features"
    )
    saved = s.get("model_record") or {}
    shown = {k: v for k, v in saved.items() if isinstance(v, float) and k != "seconds"}
    if shown:
        which = "best" if saved is not (result.history or [None])[-1] else "final"
        where = f" (epoch {saved['epoch']}, row {saved['rows']:,})" if which == "best" else ""
        typer.echo(f"{which}{where}: " + "  ".join(f"{k} {v:.4f}" for k, v in shown.items()))
    if s.get("stopped_early"):
        typer.echo("stopped early: the holdout metric stopped improving")
    typer.echo(f"model: {result.model_path}")
    if s.get("interrupted"):
        typer.echo(f"interrupted: resume with  streamfm train {spec} --resume")


AllowPluginOption = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-plugin",
        help="Let the model's spec import this 'module:Class' feature builder (or module): "
        "plugins run code, so only for models you trust (repeatable).",
    ),
]


def _load_pipeline_model(path: Path, allow_plugin: list[str] | None = None):
    from streamfm.store.trained import TrainedModel

    return TrainedModel.load(path, trust_plugins=allow_plugin or ())


@app.command()
def predict(
    model: Annotated[Path, typer.Argument(help="model file written by `streamfm train`")],
    input: Annotated[str, typer.Argument(help="file, glob, folder, or - for stdin")],
    output: Annotated[Path, typer.Option("--output", "-o", help="OUT.parquet or OUT.csv")],
    keep: Annotated[
        list[str] | None,
        typer.Option("--keep", "-k", help="Input column to copy to the output (repeatable)."),
    ] = None,
    format: Annotated[
        str | None, typer.Option("--format", help="Input format if not inferable.")
    ] = None,
    allow_plugin: AllowPluginOption = None,
) -> None:
    """Predict every row of INPUT, streaming, into a Parquet or CSV file."""
    _skip_numba_blas_probe()
    from streamfm.predict import write_predictions

    def go():
        m = _load_pipeline_model(model, allow_plugin)
        return write_predictions(m, m.source_config(input, format), output, keep or [])

    n = _run(go)
    typer.echo(f"wrote {n:,} predictions to {output}")


@app.command()
def evaluate(
    model: Annotated[Path, typer.Argument(help="model file written by `streamfm train`")],
    input: Annotated[str, typer.Argument(help="file, glob or folder holding the target column")],
    format: Annotated[
        str | None, typer.Option("--format", help="Input format if not inferable.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    allow_plugin: AllowPluginOption = None,
) -> None:
    """Metrics of MODEL on INPUT (exact AUC for classification)."""
    _skip_numba_blas_probe()

    def go():
        m = _load_pipeline_model(model, allow_plugin)
        return m.evaluate(m.source_config(input, format))

    scores = _run(go)
    if as_json:
        typer.echo(json.dumps(scores))
    else:
        typer.echo(
            "  ".join(
                f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v:,}" for k, v in scores.items()
            )
        )


@app.command()
def inspect(
    model: Annotated[Path, typer.Argument(help="model file")],
    top: Annotated[int, typer.Option(help="Show the features with the largest weights.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    allow_plugin: AllowPluginOption = None,
) -> None:
    """Describe a model: spec, sizes, feature groups, metric history, strongest features."""
    from streamfm.inspect import describe

    info = _run(lambda: describe(model, top=top, trust_plugins=allow_plugin or ()))
    if as_json:
        typer.echo(json.dumps(info, indent=1, default=str))
        return
    from streamfm.inspect import format_description

    typer.echo(format_description(info))


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="where to write the starter spec")] = Path(
        "spec.yaml"
    ),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter spec."""
    from streamfm.templates import STARTER_SPEC

    if path.exists() and not force:
        typer.echo(f"error: {path} exists; use --force to overwrite", err=True)
        raise typer.Exit(2)
    _run(lambda: path.write_text(STARTER_SPEC))
    typer.echo(f"wrote {path}: edit source, target and features, then: streamfm train {path}")


def _skip_numba_blas_probe() -> None:
    """Save ~0.17 s per command: when numba sets up its CPU target it probes for BLAS by importing
    scipy.linalg (numba.np.arraymath's `_check_blas`), which streamfm's kernels never use. For the
    commands that run kernels, that module is imported here with the probe's import failing at
    once, then imports go back to normal (a later `import scipy.linalg` works as usual)."""
    blocked = "scipy.linalg.cython_blas"
    if blocked in sys.modules or "numba.np.arraymath" in sys.modules:
        return
    sys.modules[blocked] = (
        None  # makes "import scipy.linalg.cython_blas" fail without loading scipy
    )
    try:
        import numba.np.arraymath  # noqa: F401 - runs the probe now
    finally:
        if sys.modules.get(blocked, 0) is None:
            del sys.modules[blocked]


def run() -> None:
    """Console-script entry point: the typer app, then a fast exit.

    Interpreter teardown (module finalisers of numba, llvmlite, pyarrow) takes ~0.2 s and does
    nothing for us: every file streamfm writes is closed and fsynced before a command returns.
    So once the command is done and stdout/stderr are flushed, the process exits directly.
    """
    try:
        app()
        code = 0
    except SystemExit as exc:  # typer's standalone mode always ends with sys.exit
        if isinstance(exc.code, int) or exc.code is None:
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
