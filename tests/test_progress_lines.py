"""Progress when stderr is a log (cron): plain lines with counts, rate and ETA, not a bar's carriage
returns; the tagging bar knows its total."""

from __future__ import annotations

import io
import re

import pytest
from indexer_fixtures import make_photo_folder

import indexer.progress as progress_module
from indexer.progress import LogProgress, progress_bar
from siglip_search.cli import main


def test_a_log_gets_lines_with_count_total_rate_and_eta():
    log = io.StringIO()
    bar = LogProgress(total=200, desc="indexing", unit="img", file=log, every_s=0.0)
    bar.update(50)
    bar.set_postfix(failed=1)
    bar.update(150)
    bar.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert re.fullmatch(
        r"indexing: 50/200 imgs \(25 %\), [\d.]+ imgs/s, ETA \d+:\d\d:\d\d", lines[0]
    )
    assert lines[-1].startswith("indexing: 200/200 imgs (100 %)") and "failed 1" in lines[-1]


def test_a_terminal_gets_a_bar_and_no_progress_gets_nothing():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert not isinstance(progress_bar(5, "x", "img", True, Terminal()), LogProgress)
    assert isinstance(progress_bar(5, "x", "img", True, io.StringIO()), LogProgress)
    assert not isinstance(progress_bar(5, "x", "img", False, io.StringIO()), LogProgress)


def test_index_and_tag_piped_to_a_log_print_progress_lines_with_totals(
    tmp_path, tiny_checkpoint, capsys
):
    photos = tmp_path / "photos"
    make_photo_folder(photos, 6)
    library = ["--library", str(tmp_path / "library")]
    assert main(["index", str(photos), *library, "--model", str(tiny_checkpoint)]) == 0
    # pytest's capture is not a terminal, as a cron log is not; a run shorter than the interval
    # still ends with its line
    err = capsys.readouterr().err
    assert re.search(r": \d+/\d+ imgs \(100 %\), [\d.]+ imgs/s", err), err
    assert main(["tag", *library, "--all"]) == 0
    assert re.search(r"tagging: \d+/\d+ photos \(100 %\)", capsys.readouterr().err)


@pytest.mark.parametrize("seconds", [0, 59, 3600 + 61])
def test_the_eta_is_a_clock(seconds):
    assert re.fullmatch(r"\d+:\d\d:\d\d", progress_module._clock(seconds))
