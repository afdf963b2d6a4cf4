"""Progress of long loops: whole lines in a log, a bar on a terminal, nothing when off."""

import io
import re

import pytest

from eignn_jax import graph as graph_lib
from eignn_jax.progress import progress

LINE = re.compile(r"^(?P<desc>\w+): +(?P<percent>\d+)% (?P<n>\d+)/(?P<total>\d+) \[.*\]$")


class Terminal(io.StringIO):
    def isatty(self):
        return True


def run(total, stream, **options):
    with progress(total, "graphs", stream=stream, **options) as shown:
        for _ in range(total - options.get("initial", 0)):
            shown.update()
    return stream.getvalue()


def parsed_lines(text):
    """The lines of ``text`` as regex matches; fails on a carriage return or a partial line."""
    assert "\r" not in text
    assert text == "" or text.endswith("\n")
    lines = text.splitlines()
    matches = [LINE.match(line) for line in lines]
    assert all(matches), lines
    return matches


def test_off_a_terminal_there_is_one_whole_line_per_tenth():
    lines = parsed_lines(run(25, io.StringIO(), min_gap=0))
    counts = [int(m["n"]) for m in lines]
    # Each tenth once, in order, and the last count always: counters never run together.
    assert counts == [3, 5, 8, 10, 13, 15, 18, 20, 23, 25]
    assert {m["total"] for m in lines} == {"25"} and {m["desc"] for m in lines} == {"graphs"}
    assert lines[-1]["percent"] == "100"


def test_lines_are_spaced_by_min_gap_and_come_at_least_every_max_gap():
    assert [int(m["n"]) for m in parsed_lines(run(25, io.StringIO(), min_gap=1e9))] == [25]
    assert [int(m["n"]) for m in parsed_lines(run(4, io.StringIO(), min_gap=1e9, max_gap=0))] == [1, 2, 3, 4]


@pytest.mark.parametrize("total", [1, 2, 3])
def test_small_totals_end_with_one_line_per_item_at_most(total):
    counts = [int(m["n"]) for m in parsed_lines(run(total, io.StringIO(), min_gap=0))]
    assert counts == list(range(1, total + 1))


def test_a_resumed_loop_counts_from_where_it_was():
    counts = [int(m["n"]) for m in parsed_lines(run(10, io.StringIO(), initial=6, min_gap=0))]
    assert counts == [7, 8, 9, 10]


@pytest.mark.parametrize("options", [dict(total=5, enabled=False), dict(total=0), dict(total=3, initial=3)])
def test_disabled_empty_or_finished_loops_show_nothing(options):
    for stream in (io.StringIO(), Terminal()):
        with progress(desc="graphs", stream=stream, **options) as shown:
            for _ in range(4):
                shown.update()
        assert stream.getvalue() == ""


def test_on_a_terminal_lines_printed_during_the_loop_stay_whole(capsys):
    bar = Terminal()
    with progress(2, "files", stream=bar) as shown:
        for k in range(2):
            print(f"file {k} done")
            shown.update()
    print("after")
    assert capsys.readouterr().out == "file 0 done\nfile 1 done\nafter\n"
    assert "\r" in bar.getvalue() and "2/2" in bar.getvalue()


def test_graph_loading_reports_whole_lines_on_stderr(default_files, capsys):
    graph_lib.load_graphs(default_files[:2], graph_lib.GraphConfig(), progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = parsed_lines(captured.err)
    assert lines[-1]["desc"] == "graphs" and (lines[-1]["n"], lines[-1]["total"]) == ("2", "2")
