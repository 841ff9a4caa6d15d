"""Where ``python -m bench.run --append`` writes: a folder's file of the day, begun
with a title when new, or the file it was given."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from bench.run import history_file

STARTED = dt.datetime(2026, 12, 6, 8, 30, tzinfo=dt.UTC)


def test_a_folder_gets_a_new_file_of_the_day(tmp_path: Path) -> None:
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    target = history_file(folder, STARTED)
    assert target == folder / "2026-12-06.md"
    assert target.read_text().startswith("# Benchmarks of 2026-12-06\n")
    assert "(../benchmarks.md)" in target.read_text()


def test_a_file_of_the_day_is_appended_to_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "2026-12-06.md").write_text("# Benchmarks of 2026-12-06\n\nearlier runs\n")
    target = history_file(tmp_path, STARTED)
    assert target.read_text() == "# Benchmarks of 2026-12-06\n\nearlier runs\n"


def test_a_file_is_the_target_itself(tmp_path: Path) -> None:
    given = tmp_path / "benchmarks.md"
    assert history_file(given, STARTED) == given
    assert not given.exists()
