"""The `streamfm` command line (typer). Thin: parses arguments, calls the library, prints."""

from __future__ import annotations

import json
import os
import shlex
import shutil
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


def _fail(exc: BaseException, arguments: bool = False) -> None:
    """Print an error as one paragraph and exit: 2 for spec/usage errors, 1 for the rest."""
    if _state["debug"]:
        traceback.print_exception(exc)
    for note in getattr(exc, "run_notes", []):  # e.g. which checkpoint was used or skipped
        typer.echo(f"note: {note}", err=True)
    if isinstance(exc, StreamFMError):
        msg = str(exc)
        if arguments:  # the source is INPUT and --format, not a spec section
            msg = msg.replace("source.format", "--format").replace("source.path", "INPUT")
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


def _run(fn, arguments: bool = False):
    """fn(), every failure one paragraph. arguments: the source is the command's INPUT and
    --format, so a message about source.path / source.format names those."""
    try:
        return fn()
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except BrokenPipeError:  # `streamfm predict ... -o - | head`: the reader has seen enough
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise typer.Exit(0) from None
    except Exception as exc:  # noqa: BLE001 - every failure becomes one readable paragraph
        _fail(exc, arguments=arguments)


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
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Replace the output of a previous run in output.dir."),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    cluster: Annotated[
        str | None,
        typer.Option(
            "--cluster",
            help="Train on a Dask cluster: tcp://scheduler:8786, or local:N for N local workers.",
        ),
    ] = None,
) -> None:
    """Train a model as the spec says; writes the model and metric history to output.dir."""
    _skip_numba_blas_probe()
    from streamfm.progress import ProgressPrinter
    from streamfm.spec import load_spec
    from streamfm.training.loop import train as run_train

    overrides = [*(set_ or []), *(["source.follow=true"] if follow else [])]
    parsed = _run(lambda: load_spec(spec, overrides))
    if not resume:
        _run(lambda: _make_room_for_run(parsed, overwrite))
    progress = ProgressPrinter(quiet=quiet)

    def go():
        try:
            if cluster is not None or parsed.distributed is not None:
                from streamfm.distributed import train_distributed

                return train_distributed(parsed, cluster, progress=progress, resume=resume)
            return run_train(parsed, progress=progress, resume=resume)
        finally:
            progress.close()  # before any other line: notes, the summary, an error

    result = _run(go)
    for note in result.summary.get("notes", []):
        typer.echo(f"note: {note}", err=True)
    s = result.summary
    typer.echo(
        f"trained {s['rows_learnt']:,} rows ({s['rows_read']:,} read, {s['rows_skipped']:,} skipped, "
        f"{s['rows_quarantined']:,} quarantined; {s['epochs']} epoch(s)) in {s['seconds']:.2f} s, "
        f"{s['rows_per_second'] or 0:,.0f} rows/s; {s['features']:,} features"
        + (
            f"; {s['threads']} Hogwild threads (not bit for bit reproducible)"
            if not s.get("reproducible", True)
            else f"; {s['threads']} threads"
            if s.get("threads", 1) > 1
            else ""
        )
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
        again = ["streamfm", "train", str(spec)]
        for assignment in set_ or []:
            again += ["--set", assignment]
        again += [*(["--follow"] if follow else []), "--resume"]
        typer.echo(f"interrupted: resume with  {shlex.join(again)}")


def _ours(folder: Path) -> list[Path]:
    """What a run left in a checkpoint folder (its lock file aside)."""
    from streamfm.training.lock import LOCK_NAME

    return [p for p in folder.iterdir() if p.name != LOCK_NAME]


def _make_room_for_run(spec, overwrite: bool) -> None:
    """Refuse to train over a previous run's output (unless --overwrite: then remove it)."""
    out = spec.output_dir()
    found = [
        path
        for path in (
            out / spec.output.model,
            out / "metrics.json",
            out / "metrics.csv",
            out / spec.output.quarantine,
            spec.checkpoint_dir(),
        )
        if path.exists() and (not path.is_dir() or any(_ours(path)))
    ]
    if not found:
        return
    if not overwrite:
        names = ", ".join(
            str(p.relative_to(out)) if p.is_relative_to(out) else str(p) for p in found
        )
        raise SpecError(
            f"{out} holds the output of a previous run ({names}): continue it with --resume, "
            "replace it with --overwrite, or write elsewhere with --set output.dir=..."
        )
    for path in found:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


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
    output: Annotated[
        str, typer.Option("--output", "-o", help="OUT.parquet, OUT.csv, or - (CSV to stdout)")
    ],
    keep: Annotated[
        list[str] | None,
        typer.Option("--keep", "-k", help="Input column to copy to the output (repeatable)."),
    ] = None,
    format: Annotated[
        str | None, typer.Option("--format", help="Input format if not inferable.")
    ] = None,
    allow_plugin: AllowPluginOption = None,
) -> None:
    """Predict every row of INPUT, streaming, into a Parquet or CSV file (or stdout)."""
    _skip_numba_blas_probe()
    from streamfm.predict import write_predictions

    def go():
        m = _load_pipeline_model(model, allow_plugin)
        return write_predictions(m, m.source_config(input, format), output, keep or [])

    n = _run(go, arguments=True)
    typer.echo(
        f"wrote {n:,} predictions to {'stdout' if output == '-' else output}", err=output == "-"
    )


@app.command()
def recommend(
    model: Annotated[Path, typer.Argument(help="model file of task ranking")],
    contexts: Annotated[
        str, typer.Argument(help="file, glob, folder, or - for stdin: the context rows")
    ],
    output: Annotated[
        str, typer.Option("--output", "-o", help="OUT.parquet, OUT.csv, or - (CSV to stdout)")
    ],
    top: Annotated[int, typer.Option("--top", "-k", help="Items per context.")] = 10,
    exclude_seen: Annotated[
        str | None,
        typer.Option(
            "--exclude-seen", help="(user, item) pairs never recommended (file, glob, folder)."
        ),
    ] = None,
    format: Annotated[
        str | None, typer.Option("--format", help="Input format if not inferable.")
    ] = None,
    allow_plugin: AllowPluginOption = None,
) -> None:
    """The top-k items of every context row (context keys, rank, item, score)."""
    _skip_numba_blas_probe()
    from streamfm.recommendations import check_ranking, write_recommendations

    def go():
        m = _load_pipeline_model(model, allow_plugin)
        check_ranking(m, str(model))
        return write_recommendations(
            m, m.source_config(contexts, format), output, top, exclude_seen
        )

    n, rows = _run(go, arguments=True)
    typer.echo(
        f"wrote {rows:,} recommendations for {n:,} contexts to "
        f"{'stdout' if output == '-' else output}",
        err=output == "-",
    )


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

    scores = _run(go, arguments=True)
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
    top: Annotated[int, typer.Option(help="Strongest features shown per group.")] = 5,
    group: Annotated[
        list[str] | None,
        typer.Option("--group", "-g", help="Only this feature group (repeatable)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    allow_plugin: AllowPluginOption = None,
) -> None:
    """Describe a model: feature groups (builders) with their strongest features, sizes, the
    last run and its metric history."""
    from streamfm.inspect import describe, format_description

    info = _run(lambda: describe(model, top=top, groups=group, trust_plugins=allow_plugin or ()))
    if as_json:
        typer.echo(json.dumps(info, indent=1, default=str))
        return
    typer.echo(format_description(info))


@app.command()
def explain(
    model: Annotated[Path, typer.Argument(help="model file written by `streamfm train`")],
    input: Annotated[str, typer.Argument(help="file, glob or folder of rows to explain")],
    rows: Annotated[
        str, typer.Option("--rows", help="Which rows: N (the first N) or A:B (rows A..B-1).")
    ] = "5",
    top: Annotated[int, typer.Option(help="Largest terms shown per row.")] = 10,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write every term to OUT.parquet or OUT.csv."),
    ] = None,
    format: Annotated[
        str | None, typer.Option("--format", help="Input format if not inferable.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Per-prediction contributions: bias, each feature's linear term, each pair's interaction
    (and their sums per feature group), adding up to the prediction."""
    _skip_numba_blas_probe()
    from streamfm.explain import explain_table, summarize

    def go():
        start, stop = _row_range(rows)
        m = _load_pipeline_model(model)
        table = _read_rows(m, m.source_config(input, format), start, stop)
        terms = explain_table(m, m._with_columns(table), first_row=start)
        if output is not None:
            _write_table(terms, output)
        return m, summarize(terms, top=top)

    m, summary = _run(go, arguments=True)
    if as_json:
        typer.echo(json.dumps(summary, indent=1))
        return
    from streamfm.inspect import short

    logit = m.task == "classification"
    for s in summary:
        score = f"logit {s['score']:+.4f}" if logit else f"score {s['score']:+.4f}"
        typer.echo(f"row {s['row']}: prediction {s['prediction']:.4f} ({score})")
        typer.echo(f"  {'bias':<58} {s['bias']:+.4f}")
        for name, value in sorted(s["groups"].items(), key=lambda kv: -abs(kv[1])):
            typer.echo(f"  {'group ' + short(name, 52):<58} {value:+.4f}")
        if abs(s["rounding"]) >= 5e-5:
            typer.echo(f"  {'float32 rounding':<58} {s['rounding']:+.4f}")
        if not logit and s["clip"]:
            typer.echo(f"  {'clipped to the training targets':<58} {s['clip']:+.4f}")
        if s["largest"]:
            typer.echo("  largest terms:")
        for t in s["largest"]:
            mark = "" if t["seen"] else "  (not seen in training)"
            typer.echo(
                f"    {t['kind']:<7} {short(t['feature'], 49):<49} {t['contribution']:+.4f}{mark}"
            )
    if output is not None:
        typer.echo(f"wrote every term to {output}", err=True)


@app.command()
def export(
    model: Annotated[Path, typer.Argument(help="model file")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write into.")],
) -> None:
    """Write the vocabulary, w and V of every feature group as Parquet (one file per group) and
    model.json into a folder."""
    from streamfm.export import export_model

    info = _run(lambda: export_model(model, output))
    parts = info.get("classes") or [info]
    for part in parts:
        where = output / part["folder"] if "folder" in part else output
        for g in part["groups"]:
            typer.echo(f"{where / g['file']}: {g['rows']:,} features ({g['name']})")
    typer.echo(f"{output / 'model.json'}: w0, k, groups")


@app.command()
def plot(
    run: Annotated[Path, typer.Argument(help="run folder (output.dir) or model file")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Image file (.png, .svg, .pdf); default RUN/plot.png."),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data", help="Labelled rows for ROC and calibration (default: the holdout)."
        ),
    ] = None,
) -> None:
    """Draw learning curves (progressive, windowed, holdout), ROC and calibration
    (classification) and the importance of each feature group. Needs matplotlib
    (pip install 'streamfm[plot]')."""
    _skip_numba_blas_probe()
    from streamfm.plot import plot_run

    written = _run(lambda: plot_run(run, output, data))
    typer.echo(f"wrote {written}")


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


def _row_range(text: str) -> tuple[int, int]:
    """--rows: "N" (rows 0..N-1) or "A:B" (rows A..B-1)."""
    try:
        if ":" in text:
            a, b = text.split(":", 1)
            start, stop = int(a or 0), int(b)
        else:
            start, stop = 0, int(text)
    except ValueError:
        raise SpecError(f"--rows {text!r}: expected N or A:B (row numbers from 0)") from None
    if start < 0 or stop <= start:
        raise SpecError(f"--rows {text!r}: expected 0 <= A < B")
    return start, stop


def _read_rows(model, source, start: int, stop: int):
    """Rows [start, stop) of a source (read until stop), as one pyarrow Table."""
    import pyarrow as pa

    columns = model.pipeline.columns()
    parts, seen = [], 0
    for batch, _pos in open_source_batches(source, columns):
        lo, hi = max(start - seen, 0), min(stop - seen, batch.num_rows)
        if hi > lo:
            parts.append(batch.slice(lo, hi - lo))
        seen += batch.num_rows
        if seen >= stop:
            break
    if not parts:
        raise SpecError(f"--rows: the input has {seen:,} rows, none in {start}:{stop}")
    return pa.Table.from_batches(parts)


def open_source_batches(source, columns):
    from streamfm.sources import open_source

    return open_source(source).batches(columns=columns)


def _write_table(table, output: Path) -> None:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from streamfm.store.archive import write_atomic

    suffix = output.suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv"):
        raise SpecError(f"--output {output}: use a .parquet or .csv file name")
    if suffix == ".csv":
        write_atomic(output, lambda f: pacsv.write_csv(table, f))
    else:
        write_atomic(output, lambda f: pq.write_table(table, f))


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
