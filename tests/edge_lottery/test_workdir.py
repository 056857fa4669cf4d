"""The work-directory layout: completion markers, refusal of foreign / changed / corrupted dirs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_lottery.errors import WorkDirError
from edge_lottery.workdir import FORMAT, WorkDir, open_search

RECORD = {"config": {"model": "m", "seed": 0}, "config_hash": "abc", "model": {"name": "m"},
          "dataset": {"name": "d", "sha256": "123"}, "versions": {}}


def _level(wd: WorkDir, level: int, branch: str = "ticket") -> None:
    masks = {"fc/kernel": np.array([[1, 0], [1, 1]], np.float32)}
    weights = {"fc/kernel": np.array([[0.5, 0.0], [-1.0, 2.0]], np.float32), "fc/bias": np.zeros(2, np.float32)}
    wd.save_level(level, masks, weights, {"level": level, "branch": branch}, branch=branch)


def test_create_save_and_reload(tmp_path):
    wd = WorkDir.create_or_resume(tmp_path / "w", RECORD)
    assert json.loads((tmp_path / "w" / "search.json").read_text())["format"] == FORMAT
    assert not wd.is_finished(0)
    _level(wd, 0)
    _level(wd, 1, "reinit")
    assert wd.is_finished(0) and wd.is_finished(1, "reinit") and not wd.is_finished(1)
    assert wd.finished_levels() == [0] and wd.finished_levels("reinit") == [1]
    masks, weights, metrics = wd.load_level(0)
    assert weights["fc/kernel"][1, 1] == 2.0 and metrics["level"] == 0
    wd.save_rewind_point({"fc/kernel": np.ones((2, 2), np.float32)}, 7)
    snap, step = wd.load_rewind_point()
    assert step == 7 and set(snap) == {"fc/kernel"}
    with pytest.raises(WorkDirError, match="unfinished level"):
        _level(wd, 0)  # a finished level is never rewritten
    again = WorkDir.create_or_resume(tmp_path / "w", RECORD)
    assert again.finished_levels() == [0]


def test_unfinished_level_and_temp_leftovers_are_ours(tmp_path):
    wd = WorkDir.create_or_resume(tmp_path / "w", RECORD)
    d = wd.level_dir(2)
    d.mkdir(parents=True)
    (d / "masks.npz").write_bytes(b"half")  # killed before COMPLETE
    (tmp_path / "w" / ".summary.json.x1y2.tmp").write_bytes(b"partial")  # killed mid atomic write
    wd = WorkDir.create_or_resume(tmp_path / "w", RECORD)
    assert not wd.is_finished(2)
    _level(wd, 2)
    assert wd.is_finished(2)


def test_refuses_foreign_changed_and_corrupted(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.csv").write_text("1,2")
    with pytest.raises(WorkDirError, match="other files"):
        WorkDir.create_or_resume(foreign, RECORD)
    assert sorted(p.name for p in foreign.iterdir()) == ["data.csv"]

    w = tmp_path / "w"
    wd = WorkDir.create_or_resume(w, RECORD)
    _level(wd, 0)
    with pytest.raises(WorkDirError, match="config_hash differs: model: recorded 'm', given 'n'"):
        WorkDir.create_or_resume(w, {**RECORD, "config_hash": "xyz", "config": {"model": "n", "seed": 0}})
    with pytest.raises(WorkDirError, match="dataset differs"):
        WorkDir.create_or_resume(w, {**RECORD, "dataset": {"sha256": "999"}})

    (w / "level_0" / "notes.txt").write_text("x")
    with pytest.raises(WorkDirError, match="foreign file 'notes.txt'"):
        WorkDir.open(w)
    (w / "level_0" / "notes.txt").unlink()

    weights = w / "level_0" / "weights.npz"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(WorkDirError, match="corrupted"):
        WorkDir.open(w)

    other = tmp_path / "other"
    other.mkdir()
    (other / "search.json").write_text(json.dumps({"format": "somebody-else/3"}))
    with pytest.raises(WorkDirError, match="format"):
        WorkDir.create_or_resume(other, RECORD)
    (other / "search.json").write_text("{not json")
    with pytest.raises(WorkDirError, match="unreadable"):
        WorkDir.open(other)


def test_summary_write_is_skipped_when_unchanged(tmp_path):
    wd = WorkDir.create_or_resume(tmp_path / "w", RECORD)
    wd.write_summary({"levels": [], "best_level": None})
    path = tmp_path / "w" / "summary.json"
    stamp = path.stat().st_mtime_ns
    wd.write_summary({"levels": [], "best_level": None})
    assert path.stat().st_mtime_ns == stamp
    record = open_search(tmp_path / "w")
    assert record.levels == [] and record.best_level is None
    with pytest.raises(WorkDirError, match="at least one finished level"):
        record.load_model("best")
