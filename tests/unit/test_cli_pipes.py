"""`reflow history | head`: a reader that stops early is not an error of Reflow's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_a_closed_pipe_ends_the_command_quietly(tmp_path: Path) -> None:
    """Output into a pipe nobody reads any more: no 'unexpected BrokenPipeError … please report it',
    and the shell's SIGPIPE status (141)."""
    project = tmp_path / "p"
    assert subprocess.run([sys.executable, "-m", "engine", "init", str(project)], capture_output=True).returncode == 0
    read_end, write_end = os.pipe()
    os.close(read_end)                  # the reader is gone before the first line (as `head -1` after one)
    try:
        writer = subprocess.run([sys.executable, "-m", "engine", "--project-dir", str(project), "compile",
                                 "braze_users"], stdout=write_end, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write_end)
    assert "BrokenPipeError" not in writer.stderr and "report it" not in writer.stderr, writer.stderr
    assert writer.returncode == 141, writer.stderr
