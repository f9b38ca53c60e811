"""Readers for public trace formats, and the format registry behind ``load``.

A trace file is user input: a typo or a truncated download must fail with the file, the
line and the offending value (``trace.csv line 17: TIMESTAMP '2023-11-1x' is not a
timestamp``), not with a traceback from inside numpy or pandas. Every reader therefore
parses whole columns in one vectorised call and, only when that fails, goes back over
the values to find the first bad one.

Arrival formats return a :class:`Trace`; count formats return an int64 array of requests
per bin, which :func:`load` turns into arrivals with :func:`traces.counts.from_counts`.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import inspect
import math
import reprlib
import warnings
from typing import Callable, Optional

import numpy as np
import pandas as pd

from servesim.traces import _checks, transforms
from servesim.traces.counts import from_counts
from servesim.traces.trace import Trace, TraceError

AZURE_LLM_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
AZURE_FUNCTIONS_MINUTES = tuple(str(minute) for minute in range(1, 1441))

# where(i) -> "path line N: COLUMN", the prefix of an error about the i-th value read.
Where = Callable[[int], str]

# A value from the file, as an error message shows it: its repr, cut short, so that a
# line of a million digits still makes a one-line message.
_SHOWN = reprlib.Repr()
_SHOWN.maxstring = 60
_shown = _SHOWN.repr


EXIT_STAGE = "exit_stage"  # a timestamps file's optional second field: the exit a request left at


def load_timestamps(path) -> Trace:
    """A text file with one arrival time in seconds per line, sorted, finite and >= 0.

    Blank lines and lines starting with ``#`` are skipped. Times are used as they are
    (not shifted to start at 0), so a file can encode an initial quiet period.

    A line may add, after a comma, the exit the request left at in a measured server (a
    whole number from 1, the first exit); then every line must, and the trace gets the
    column ``exit_stage`` (replayed by ``exits.behaviour: {kind: trace_exits}``).
    """
    lines, values, stages = [], [], []
    for number, line in enumerate(_read_text(path).splitlines(), 1):
        value = line.strip()
        if value and not value.startswith("#"):
            time, comma, stage = value.partition(",")
            lines.append(number)
            values.append(time.strip())
            stages.append(stage.strip() if comma else None)
    if not values:
        raise TraceError(f"{path}: no arrival times (only blank or # lines)")
    where = _where(path, lines)
    times = _numbers(values, np.float64, where)
    _check_sorted(times, values, where)
    given = [s is not None for s in stages]
    if not any(given):
        return Trace(times, source=str(path))
    if not all(given):
        i = given.index(False) if given[0] else given.index(True)
        raise TraceError(f"{where(i)} {'has no' if given[0] else 'has an'} exit stage after a comma, but line "
                         f"{lines[0]} {'has one' if given[0] else 'has none'}; give it on every line or on none")
    exits = _numbers(stages, np.int64, _where(path, lines, "exit stage"))
    if (exits < 1).any():
        i = int(np.flatnonzero(exits < 1)[0])
        raise TraceError(f"{where(i)} exit stage {_shown(stages[i])} is not a whole number >= 1 (the first exit is 1)")
    return Trace(times, columns={EXIT_STAGE: exits}, source=str(path))


def load_twitter_counts(path) -> np.ndarray:
    """The Twitter per-second trace: whitespace-separated request counts, one per second.

    The published file is one line of 1,899,061 integers; several lines are read as one
    series. Returns int64 counts (about 0.3 s for the real 5.8 MB file).
    """
    text = _read_text(path)
    tokens = text.split()
    if not tokens:
        raise TraceError(f"{path}: no counts (the file is empty)")
    return _numbers(tokens, np.int64, lambda i: _token_place(path, text, i))


def load_azure_llm(path) -> Trace:
    """Azure LLM inference trace 2023 (Splitwise): ``TIMESTAMP,ContextTokens,GeneratedTokens``.

    Timestamps such as ``2023-11-16 18:17:03.9799600`` (ISO 8601; a UTC offset, as in
    later Azure traces, is honoured) are shifted so the first request arrives at 0 s.
    ``ContextTokens`` and ``GeneratedTokens`` become int64 columns of the trace. Rows
    must be in time order: both published 2023 files are, so a row out of order means a
    damaged or hand-edited file, and it is reported rather than silently re-sorted.
    """
    table, lines = _read_csv(path, AZURE_LLM_COLUMNS)
    if not lines.size:
        raise TraceError(f"{path}: no requests (only a header)")
    where = _where(path, lines, "TIMESTAMP")
    texts = table["TIMESTAMP"].tolist()
    stamps = pd.to_datetime(pd.Series(texts), format="ISO8601", errors="coerce", utc=True)
    missing = np.flatnonzero(stamps.isna().to_numpy())
    if missing.size:
        i = int(missing[0])
        raise TraceError(f"{where(i)} {_shown(texts[i])} is not a timestamp")
    # at pandas' own resolution: nanoseconds cover only the years 1677-2262, and a
    # cast to them would wrap a date outside that range without a word
    moments = stamps.dt.tz_localize(None).to_numpy()  # UTC, naive: a datetime64 array
    _check_sorted(moments, texts, where)
    columns = {
        name: _numbers(table[name].tolist(), np.int64, _where(path, lines, name))
        for name in AZURE_LLM_COLUMNS[1:]
    }
    return Trace((moments - moments[0]) / np.timedelta64(1, "s"), columns, source=str(path))


def load_azure_functions(path, *, function: Optional[str] = None) -> np.ndarray:
    """Azure Functions 2019 invocations per minute of one day: int64 array of 1440 counts.

    The CSV has ``HashOwner,HashApp,HashFunction,Trigger,1,...,1440``, one row per
    function. ``function=None`` sums all rows (the whole region's load); otherwise the
    row(s) whose ``HashFunction`` equals ``function`` (summed, should a hash appear on
    more than one row).
    """
    columns = ("HashFunction",) + AZURE_FUNCTIONS_MINUTES
    _require_columns(path, columns)
    try:
        table = _pandas(path, pd.read_csv, index_col=False,
                        dtype={"HashFunction": str, **dict.fromkeys(AZURE_FUNCTIONS_MINUTES, np.int64)})
        counts = table[list(AZURE_FUNCTIONS_MINUTES)].to_numpy()
        if (counts < 0).any():
            raise ValueError("negative count")
    except TraceError:
        raise
    except (ValueError, OverflowError):  # OverflowError: a count beyond int64
        # Some cell is not a count: read the file again as text, slowly, to name the line
        # and the value.
        table, lines = _read_csv(path, columns)
        counts = np.column_stack([
            _numbers(table[minute].tolist(), np.int64, _where(path, lines, f"minute {minute}"))
            for minute in AZURE_FUNCTIONS_MINUTES
        ])
    if not len(counts):
        raise TraceError(f"{path}: no functions (only a header)")
    if function is None:
        return counts.sum(axis=0, dtype=np.int64)
    rows = (table["HashFunction"] == function).to_numpy()
    if not rows.any():
        raise TraceError(
            f"{path}: no row has HashFunction {function!r}; the file holds "
            f"{table['HashFunction'].nunique()} functions"
        )
    return counts[rows].sum(axis=0, dtype=np.int64)


@dataclasses.dataclass(frozen=True)
class Format:
    """One readable format: ``read(path, **options)`` returns a Trace or, when
    ``bin_seconds`` is set, an array of request counts per bin of that many seconds."""

    read: Callable
    bin_seconds: Optional[float]
    description: str


FORMATS = {
    "timestamps": Format(load_timestamps, None, "text, one arrival time in seconds per line"),
    "twitter": Format(load_twitter_counts, 1.0, "Twitter trace: requests per second, space-separated"),
    "azure-llm": Format(load_azure_llm, None, "Azure LLM inference 2023 CSV (TIMESTAMP,ContextTokens,GeneratedTokens)"),
    "azure-functions": Format(load_azure_functions, 60.0,
                              "Azure Functions 2019 per-minute invocation CSV (option: function=HASH)"),
}


def load(path, format: str, *, rng: Optional[np.random.Generator] = None,
         bin_seconds: Optional[float] = None, mode: str = "uniform",
         window: Optional[tuple] = None, **options) -> Trace:
    """Read ``path`` in the named ``format`` (a key of ``FORMATS``) as a Trace.

    Count formats are turned into arrivals by :func:`from_counts` with ``mode`` and
    ``rng`` (required for them), in bins of ``bin_seconds`` (default: the format's own,
    1 s for twitter, 60 s for azure-functions). ``window=(t0, t1)`` keeps the arrivals in
    ``[t0, t1)`` shifted to start at 0, as :func:`traces.transforms.window`; for count
    formats the bins are cut *before* arrivals are placed, so a 20-minute slice of the
    22-day Twitter trace costs 72,000 arrivals, not 120 million. ``options`` go to the
    reader (e.g. ``function=`` for azure-functions).
    """
    if format not in FORMATS:
        raise TraceError(f"unknown trace format {format!r}; known formats: {', '.join(FORMATS)}")
    spec = FORMATS[format]
    try:
        inspect.signature(spec.read).bind(path, **options)
    except TypeError:
        accepted = [p.name for p in inspect.signature(spec.read).parameters.values()
                    if p.kind is p.KEYWORD_ONLY]
        takes = f"options {', '.join(accepted)}" if accepted else "no options"
        raise TraceError(f"format {format!r} takes {takes}, got {', '.join(sorted(options))}") from None
    if window is not None:
        if len(window) != 2:
            raise TraceError(f"window must be (t0, t1) in seconds, got {window!r}")
        t0 = _checks.number("window[0]", window[0], at_least=0)
        t1 = _checks.number("window[1]", window[1], above=t0)
    if spec.bin_seconds is None:
        if bin_seconds is not None:
            raise TraceError(f"bin_seconds applies to count formats only; {format!r} holds arrival times")
        trace = spec.read(path, **options)
        return trace if window is None else transforms.window(trace, t0, t1)
    if rng is None:
        raise TraceError(f"format {format!r} holds counts per bin: pass rng= to place the arrivals")
    bin_seconds = _checks.number("bin_seconds", spec.bin_seconds if bin_seconds is None else bin_seconds,
                                 above=0)
    counts = spec.read(path, **options)
    if window is None:
        return from_counts(counts, bin_seconds, mode=mode, rng=rng, source=str(path))
    first = int(t0 // bin_seconds)
    part = from_counts(counts[first: math.ceil(t1 / bin_seconds)], bin_seconds, mode=mode, rng=rng,
                       source=str(path))
    shift = first * bin_seconds
    return dataclasses.replace(transforms.window(part, t0 - shift, t1 - shift),
                               source=f"window({path}, {t0:g}, {t1:g})")


def _numbers(values: list, dtype, where: Where) -> np.ndarray:
    """Parse strings into finite numbers >= 0 in one numpy call; name the first bad one."""
    what = "a whole number >= 0" if np.issubdtype(dtype, np.integer) else "a finite number >= 0"
    try:
        array = np.array(values, dtype=dtype)
    except (ValueError, TypeError, OverflowError):
        for i, value in enumerate(values):
            try:
                np.array(value, dtype=dtype)
            except (ValueError, TypeError, OverflowError):
                raise TraceError(f"{where(i)} {_shown(value)} is not {what}") from None
        raise
    bad = np.flatnonzero(~np.isfinite(array) | (array < 0))
    if bad.size:
        i = int(bad[0])
        raise TraceError(f"{where(i)} {_shown(values[i])} is not {what}")
    return array


def _check_sorted(keys: np.ndarray, texts: list, where: Where) -> None:
    down = np.flatnonzero(np.diff(keys) < 0)
    if down.size:
        i = int(down[0]) + 1
        raise TraceError(
            f"{where(i)} {_shown(texts[i])} is earlier than the arrival before it ({_shown(texts[i - 1])}); "
            f"arrivals must be in time order"
        )


def _where(path, lines, column: str = "") -> Where:
    return lambda i: f"{path} line {lines[i]}:" + (f" {column}" if column else "")


def _token_place(path, text: str, index: int) -> str:
    """'path line L, value V:' for the index-th whitespace-separated token (only on errors)."""
    for number, line in enumerate(text.splitlines(), 1):
        tokens = len(line.split())
        if index < tokens:
            return f"{path} line {number}, value {index + 1}:"
        index -= tokens
    return f"{path}:"


def _read_text(path) -> str:
    try:
        with open(path, encoding="utf-8-sig") as file:  # a BOM (spreadsheet exports) is no arrival
            return file.read()
    except UnicodeDecodeError as error:
        raise TraceError(f"{path}: not UTF-8 text (byte {error.start} is {error.object[error.start]:#04x})") from None
    except OSError as error:
        raise _os_error(path, error) from None


def _read_csv(path, columns) -> tuple[pd.DataFrame, np.ndarray]:
    """The named columns as text, without blank lines, and the file line of each row.

    Checks the header first so a missing column is reported as such. Blank lines are
    kept while parsing (``skip_blank_lines=False``) so row ``i`` is file line ``i + 2``.
    """
    _require_columns(path, columns)
    table = _pandas(path, pd.read_csv, index_col=False, dtype=str, keep_default_na=False,
                    skip_blank_lines=False)
    lines = np.arange(2, len(table) + 2)
    blank = (table == "").all(axis=1).to_numpy()
    return table.loc[~blank, list(columns)], lines[~blank]


def _require_columns(path, columns) -> None:
    """Name the missing columns (and show the header) instead of failing later on a
    KeyError, and a repeated one, which pandas would read as two ('TIMESTAMP.1')."""
    first = _pandas(path, pd.read_csv, header=None, nrows=1, dtype=str, keep_default_na=False)
    header = first.iloc[0].tolist() if len(first) else []
    repeated = [name for name, n in collections.Counter(header).items() if n > 1 and name in columns]
    if repeated:
        raise TraceError(f"{path} line 1: column {repeated[0]!r} appears {header.count(repeated[0])} times in the header")
    missing = [name for name in columns if name not in header]
    if missing:
        shown = ", ".join(missing[:5]) + (f", ... ({len(missing)} in all)" if len(missing) > 5 else "")
        raise TraceError(
            f"{path}: missing column(s) {shown}; the header (line 1) is {','.join(map(str, header))[:200]!r}"
        )


def _pandas(path, read, **options):
    """``read(path, **options)`` with pandas' and the OS's errors turned into TraceErrors naming the file."""
    try:
        with warnings.catch_warnings():
            # e.g. every row has more fields than the header: pandas would drop data silently
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return read(path, **options)
    except pd.errors.ParserWarning as warning:
        raise TraceError(_long_row(path) or f"{path}: {warning}") from None
    except pd.errors.EmptyDataError:
        raise TraceError(f"{path}: the file is empty (no header line)") from None
    except pd.errors.ParserError as error:
        raise TraceError(_long_row(path) or f"{path}: {' '.join(str(error).split())}") from None
    except UnicodeDecodeError:
        _read_text(path)  # pandas' offset is into its own buffer: this names the file's byte
        raise TraceError(f"{path}: not UTF-8 text") from None
    except OSError as error:
        raise _os_error(path, error) from None


def _long_row(path) -> Optional[str]:
    """'path line N: 4 values for the 3 columns of the header' for the first row longer
    than the header (pandas words it in two ways, one without the line), or None."""
    with open(path, encoding="utf-8", newline="") as file:
        rows = csv.reader(file)
        width = len(next(rows, []))
        for row in rows:
            if len(row) > width:
                return f"{path} line {rows.line_num}: {len(row)} values for the {width} columns of the header"
    return None


def _os_error(path, error: OSError) -> TraceError:
    if isinstance(error, FileNotFoundError):
        return TraceError(f"{path}: no such file")
    return TraceError(f"{path}: cannot read ({error.strerror or error})")
