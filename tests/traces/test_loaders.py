"""File formats on small files written into tmp_path, and their error messages.

A malformed file must fail with the file name, the 1-based line and the offending value.
"""

import re

import numpy as np
import pytest

from servesim.traces import (
    FORMATS,
    TraceError,
    load,
    load_azure_functions,
    load_azure_llm,
    load_timestamps,
    load_twitter_counts,
)


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


def raises_with(call, *words):
    with pytest.raises(TraceError) as info:
        call()
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    return str(info.value)


# --- timestamps ---------------------------------------------------------------------------


def test_timestamps_skip_blank_and_comment_lines(tmp_path):
    path = write(tmp_path, "t.txt", "# arrivals\n0.5\n\n  1.25 \n# more\n1.25\n3e1\n")
    trace = load_timestamps(path)
    np.testing.assert_array_equal(trace.times, [0.5, 1.25, 1.25, 30.0])
    assert trace.source == str(path)


@pytest.mark.parametrize(
    "text, words",
    [
        ("0.1\n0.2\n# c\nabc\n", ["line 4", "'abc'", "not a finite number"]),
        ("0.1\n0.2 0.3\n", ["line 2", "'0.2 0.3'"]),
        ("0.1\n\n-2\n", ["line 3", "'-2'"]),
        ("0.1\nnan\n", ["line 2", "'nan'"]),
        ("0.1\ninf\n", ["line 2", "'inf'"]),
        ("1.0\n2.0\n1.5\n", ["line 3", "'1.5'", "'2.0'", "order"]),
        ("# only a comment\n\n", ["no arrival times"]),
    ],
)
def test_timestamps_errors_name_file_line_value(tmp_path, text, words):
    path = write(tmp_path, "arrivals.txt", text)
    raises_with(lambda: load_timestamps(path), "arrivals.txt", *words)


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.txt"
    for read in (load_timestamps, load_twitter_counts, load_azure_llm, load_azure_functions):
        raises_with(lambda: read(path), str(path), "no such file")


def test_a_byte_order_mark_is_no_arrival(tmp_path):
    # spreadsheet exports start with one; profiles tolerate it too
    assert len(load_timestamps(write(tmp_path, "t.txt", "\ufeff0.5\n1.0\n"))) == 2
    np.testing.assert_array_equal(load_twitter_counts(write(tmp_path, "c.txt", "\ufeff3 4\n")), [3, 4])


def test_a_huge_value_is_shown_cut_short(tmp_path):
    message = raises_with(lambda: load_timestamps(write(tmp_path, "t.txt", "0.5\n" + "9" * 100_000 + "x\n")),
                          "t.txt line 2: '999", "...", "9x' is not a finite number")
    assert len(message) < 200


def test_directory_and_binary_files(tmp_path):
    raises_with(lambda: load_timestamps(tmp_path), str(tmp_path), "cannot read")
    path = tmp_path / "bin.txt"
    path.write_bytes(b"1\n\xff\xfe\n")
    raises_with(lambda: load_twitter_counts(path), "bin.txt", "UTF-8")


# --- twitter ------------------------------------------------------------------------------


def test_twitter_counts_one_line_or_several(tmp_path):
    np.testing.assert_array_equal(load_twitter_counts(write(tmp_path, "a.txt", "3 0 5 \n")), [3, 0, 5])
    counts = load_twitter_counts(write(tmp_path, "b.txt", "1 2\n3\n\n4 5  \n"))
    np.testing.assert_array_equal(counts, [1, 2, 3, 4, 5])
    assert counts.dtype == np.int64


@pytest.mark.parametrize(
    "text, words",
    [
        ("1 2 x3 4\n", ["line 1, value 3", "'x3'"]),
        ("1 2\n3 4 5\n6 1.5\n", ["line 3, value 2", "'1.5'"]),
        ("1 -4 2", ["line 1, value 2", "'-4'"]),
        ("1 99999999999999999999999", ["value 2", "'99999999999999999999999'"]),
        ("  \n", ["no counts"]),
    ],
)
def test_twitter_errors_name_file_line_value(tmp_path, text, words):
    path = write(tmp_path, "workload.txt", text)
    raises_with(lambda: load_twitter_counts(path), "workload.txt", *words)


# --- azure llm ----------------------------------------------------------------------------

LLM_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
LLM_ROWS = (
    "2023-11-16 18:17:03.9799600,4808,10\n"
    "2023-11-16 18:17:04.0319600,3180,8\n"
    "2023-11-16 18:17:05.0000000,91,0\n"
)


def test_azure_llm_rebases_and_keeps_token_columns(tmp_path):
    trace = load_azure_llm(write(tmp_path, "code.csv", LLM_HEADER + LLM_ROWS))
    np.testing.assert_allclose(trace.times, [0.0, 0.052, 1.02004], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(trace.columns["ContextTokens"], [4808, 3180, 91])
    np.testing.assert_array_equal(trace.columns["GeneratedTokens"], [10, 8, 0])
    assert trace.columns["ContextTokens"].dtype == np.int64


def test_azure_llm_dates_past_2262_keep_their_distance(tmp_path):
    # nanoseconds since 1970 end in 2262: a cast to them used to wrap such a date silently
    rows = "1700-01-01 00:00:00,1,1\n9999-01-01 00:00:00,1,1\n"
    trace = load_azure_llm(write(tmp_path, "far.csv", LLM_HEADER + rows))
    assert trace.times[1] == pytest.approx(8299 * 365.2425 * 86400, rel=1e-4)


def test_azure_llm_tolerates_blank_lines_and_extra_columns(tmp_path):
    text = "TIMESTAMP,ContextTokens,GeneratedTokens,Extra\n\n" + LLM_ROWS.replace("\n", ",x\n") + "\n"
    assert len(load_azure_llm(write(tmp_path, "x.csv", text))) == 3


@pytest.mark.parametrize(
    "text, words",
    [
        (LLM_HEADER + LLM_ROWS + "2023-11-1x 18:17:06.0,5,5\n",
         ["line 5", "TIMESTAMP", "'2023-11-1x 18:17:06.0'", "not a timestamp"]),
        # a blank line does not shift the line numbers
        (LLM_HEADER + "\n" + LLM_ROWS.replace(",3180,", ",31x0,"),
         ["line 4", "ContextTokens", "'31x0'"]),
        (LLM_HEADER + LLM_ROWS + "2023-11-16 18:17:06.0,5\n", ["line 5", "GeneratedTokens", "''"]),
        (LLM_HEADER + LLM_ROWS + "2023-11-16 18:17:06.0,5,-1\n", ["line 5", "GeneratedTokens", "'-1'"]),
        (LLM_HEADER + LLM_ROWS + "2023-11-16 18:17:01.0,5,1\n",
         ["line 5", "'2023-11-16 18:17:01.0'", "earlier", "order"]),
        (LLM_HEADER + LLM_ROWS + "2023-11-16 18:17:06.0,5,1,9\n", ["line 5"]),
        ("TIMESTAMP,ContextTokens\n2023-11-16 18:17:06.0,5\n", ["missing column", "GeneratedTokens"]),
        (LLM_ROWS, ["missing column", "TIMESTAMP", "ContextTokens", "line 1"]),
        (LLM_HEADER, ["no requests"]),
        ("", ["empty"]),
    ],
)
def test_azure_llm_errors_name_file_line_value(tmp_path, text, words):
    path = write(tmp_path, "trace.csv", text)
    raises_with(lambda: load_azure_llm(path), "trace.csv", *words)


# --- azure functions ----------------------------------------------------------------------

MINUTES = [str(m) for m in range(1, 1441)]


def functions_csv(tmp_path, rows, name="invocations.csv", header=None):
    header = header or ["HashOwner", "HashApp", "HashFunction", "Trigger", *MINUTES]
    lines = [",".join(header)]
    for function, counts in rows:
        lines.append(",".join(["own", "app", function, "http", *map(str, counts)]))
    return write(tmp_path, name, "\n".join(lines) + "\n")


def test_azure_functions_sum_and_select(tmp_path):
    a, b = np.arange(1440), np.full(1440, 2)
    path = functions_csv(tmp_path, [("fa", a), ("fb", b)])
    total = load_azure_functions(path)
    assert total.dtype == np.int64 and total.shape == (1440,)
    np.testing.assert_array_equal(total, a + b)
    np.testing.assert_array_equal(load_azure_functions(path, function="fb"), b)
    raises_with(lambda: load_azure_functions(path, function="zz"), "invocations.csv", "'zz'", "2 functions")


@pytest.mark.parametrize(
    "cell, words",
    [("x", ["line 3", "minute 17", "'x'"]), ("-2", ["line 3", "minute 17", "'-2'"]),
     ("", ["line 3", "minute 17", "''"])],
)
def test_azure_functions_bad_cell_names_file_line_value(tmp_path, cell, words):
    bad = [str(v) for v in range(1440)]
    bad[16] = cell
    path = functions_csv(tmp_path, [("fa", np.zeros(1440, int))])
    with path.open("a") as file:
        file.write(",".join(["own", "app", "fb", "http", *bad]) + "\n")
    raises_with(lambda: load_azure_functions(path), "invocations.csv", *words)


def test_azure_functions_missing_minute_column(tmp_path):
    header = ["HashOwner", "HashApp", "HashFunction", "Trigger", *MINUTES[:-2]]
    path = functions_csv(tmp_path, [], header=header)
    raises_with(lambda: load_azure_functions(path), "invocations.csv", "missing column", "1439", "1440")


# --- registry -----------------------------------------------------------------------------


def test_load_every_format(tmp_path, rng):
    assert set(FORMATS) == {"timestamps", "twitter", "azure-llm", "azure-functions"}
    trace = load(write(tmp_path, "t.txt", "0.5\n2\n"), "timestamps")
    np.testing.assert_array_equal(trace.times, [0.5, 2.0])

    twitter = load(write(tmp_path, "w.txt", "2 0 3\n"), "twitter", rng=rng)
    np.testing.assert_array_equal(np.diff(np.searchsorted(twitter.times, [0, 1, 2, 3])), [2, 0, 3])

    llm = load(write(tmp_path, "c.csv", LLM_HEADER + LLM_ROWS), "azure-llm")
    assert len(llm) == 3 and "ContextTokens" in llm.columns

    counts = np.zeros(1440, int)
    counts[[0, 2]] = [4, 1]
    path = functions_csv(tmp_path, [("fa", counts), ("fb", counts)])
    functions = load(path, "azure-functions", rng=rng, function="fa")
    np.testing.assert_array_equal(np.diff(np.searchsorted(functions.times, [0, 60, 120, 180])), [4, 0, 1])
    poisson = load(path, "azure-functions", rng=rng, mode="poisson", bin_seconds=1.0)
    assert poisson.times.max() < 3.0


def test_load_window_cuts_bins_before_placing_arrivals(tmp_path, rng):
    counts = np.arange(100)
    path = write(tmp_path, "w.txt", " ".join(map(str, counts)))
    trace = load(path, "twitter", rng=rng, window=(20, 50))
    assert len(trace) == counts[20:50].sum()
    assert trace.times.min() >= 0 and trace.times.max() < 30
    assert "window" in trace.source and "20" in trace.source
    # a window not on bin edges still keeps exactly the arrivals in [t0, t1)
    part = load(path, "twitter", rng=rng, window=(20.5, 22.5))
    assert counts[21] <= len(part) <= counts[20:23].sum() and part.times.max() < 2.0
    timestamps = load(write(tmp_path, "t.txt", "1\n2\n3\n"), "timestamps", window=(1.5, 3))
    np.testing.assert_array_equal(timestamps.times, [0.5])


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"format": "csv"}, ["'csv'", "timestamps", "twitter", "azure-llm", "azure-functions"]),
        ({"format": "twitter"}, ["rng"]),
        ({"format": "twitter", "rng": "R", "function": "x"}, ["'twitter'", "function"]),
        ({"format": "timestamps", "bin_seconds": 2.0}, ["bin_seconds", "count formats"]),
        ({"format": "twitter", "rng": "R", "bin_seconds": -1}, ["bin_seconds", "-1"]),
        ({"format": "twitter", "rng": "R", "window": (1, 2, 3)}, ["window", "(1, 2, 3)"]),
        ({"format": "twitter", "rng": "R", "window": (5, 2)}, ["window[1]", "> 5", "got 2"]),
    ],
)
def test_load_errors(tmp_path, rng, kwargs, words):
    path = write(tmp_path, "w.txt", "1 2 3 4 5 6\n")
    if kwargs.get("rng") == "R":
        kwargs["rng"] = rng
    raises_with(lambda: load(path, **kwargs), *words)


def test_load_missing_file(tmp_path, rng):
    path = tmp_path / "absent.csv"
    for name in FORMATS:
        raises_with(lambda: load(path, name, rng=rng), str(path))


def test_timestamps_may_carry_each_request_exit(tmp_path):
    path = tmp_path / "log.txt"
    path.write_text("# a measured server's log\n0.5,1\n1.0, 3\n1.5,2\n")
    trace = load_timestamps(path)
    assert trace.times.tolist() == [0.5, 1.0, 1.5] and trace.columns["exit_stage"].tolist() == [1, 3, 2]


@pytest.mark.parametrize("text, message", [
    ("0.5,1\n1.0\n", "line 2: has no exit stage after a comma, but line 1 has one"),
    ("0.5\n1.0,2\n", "line 2: has an exit stage after a comma, but line 1 has none"),
    ("0.5,0\n", "line 1: exit stage '0' is not a whole number >= 1 (the first exit is 1)"),
    ("0.5,two\n", "line 1: exit stage 'two' is not a whole number"),
])
def test_timestamps_with_bad_exits_name_the_line(tmp_path, text, message):
    path = tmp_path / "log.txt"
    path.write_text(text)
    with pytest.raises(TraceError, match=re.escape(f"{path} {message}")):
        load_timestamps(path)
