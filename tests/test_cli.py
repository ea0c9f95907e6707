"""The one error edge of `siglip-search`: whatever command fails, the user reads one line and gets
an exit status, never a traceback."""

from __future__ import annotations

import pytest

import indexer.cli
import indexer.cli_search
import ui.cli
from siglip_search.cli import main


def test_a_missing_library_is_one_line_and_exit_status_2(tmp_path, capsys):
    assert main(["status", "--library", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("siglip-search: error: ") and err.count("\n") == 1


def test_ctrl_c_in_a_library_command_says_how_to_resume(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(indexer.cli, "index_command", interrupted)
    assert main(["index", "/photos"]) == 130
    assert (
        capsys.readouterr().err
        == "siglip-search: interrupted; run the same command again to resume\n"
    )


def test_ctrl_c_elsewhere_says_only_interrupted(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(ui.cli, "demo_command", interrupted)
    assert main(["demo", "--no-serve"]) == 130
    assert capsys.readouterr().err == "siglip-search: interrupted\n"


def test_a_reader_leaving_a_pipe_early_is_not_an_error(monkeypatch, capsys):
    def pipe_closed(args):
        raise BrokenPipeError

    monkeypatch.setattr(indexer.cli_search, "search_command", pipe_closed)
    monkeypatch.setattr("os.dup2", lambda fd, fd2: None)  # keep pytest's own stdout
    assert main(["search", "beach"]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_the_web_server_reports_a_taken_port_as_one_line(command, monkeypatch, capsys):
    def port_taken(args):
        raise OSError(98, "Address already in use")

    monkeypatch.setattr(ui.cli, f"{command}_command", port_taken)
    assert main([command]) == 2
    assert capsys.readouterr().err == "siglip-search: error: [Errno 98] Address already in use\n"


def test_an_os_error_of_a_library_command_is_not_hidden(monkeypatch):
    # Only the web server's commands declare OSError as the user's to fix; elsewhere it is a bug
    # or a broken disk, and its traceback is what a report needs.
    def disk_error(args):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(indexer.cli, "status_command", disk_error)
    with pytest.raises(OSError, match="Input/output error"):
        main(["status"])


def test_typed_errors_of_the_model_commands_are_one_line_too(tmp_path, capsys):
    assert (
        main(
            ["eval", "--data", str(tmp_path / "no-eval-set"), "--model", str(tmp_path / "no-model")]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("siglip-search: error: ") and err.count("\n") == 1
