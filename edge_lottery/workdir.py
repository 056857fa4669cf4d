"""The one place that knows the layout of a search work directory.

::

    <work_dir>/
      search.json                 format marker, resolved config + hash, dataset/model identity, versions
      model.json                  architecture of a user-supplied Keras model (registry models: absent)
      rewind_point.npz            θ_k: every non-mask variable at step k, plus the step
      level_<L>/                  the ticket branch (level 0 = dense training)
        masks.npz  weights.npz  metrics.json  COMPLETE
      controls/<name>/level_<L>/  same files for the "reinit" and "random_prune" branches
      summary.json                one row per finished level and branch, plus hyperparameters
      tensorboard/<branch>/level_<L>/
      accuracy_vs_density.png

Why this shape: a search is long, so it must survive ``kill -9`` at any instant. Every file is
written atomically (``edge_lottery.atomic``) and a level counts as finished only when its
``COMPLETE`` marker exists; the marker is written last and records the SHA-256 of the level's
files, so a marker never vouches for a damaged file. An unfinished level directory is ours and is
simply redone. Anything we did not write, or a configuration that differs from the one recorded,
is refused with :class:`~edge_lottery.errors.WorkDirError`; nothing is ever overwritten.

:func:`open_search` is the public read-only view used by the converters package.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import platform
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from edge_lottery.atomic import atomic_write_bytes, atomic_write_json
from edge_lottery.errors import WorkDirError, expected

log = logging.getLogger(__name__)

FORMAT = "edge-lottery-search/1"
SEARCH_JSON = "search.json"
SUMMARY_JSON = "summary.json"
MODEL_JSON = "model.json"
REWIND_POINT = "rewind_point.npz"
PLOT = "accuracy_vs_density.png"
TENSORBOARD = "tensorboard"
CONTROLS = "controls"
COMPLETE = "COMPLETE"
LEVEL_FILES = ("masks.npz", "weights.npz", "metrics.json")
TICKET = "ticket"

_LEVEL_RE = re.compile(r"^level_(\d+)$")
_TMP_RE = re.compile(r"^\..+\.tmp$")  # leftovers of edge_lottery.atomic killed mid-write
_TOP_LEVEL = {SEARCH_JSON, SUMMARY_JSON, MODEL_JSON, REWIND_POINT, PLOT, TENSORBOARD, CONTROLS}


def versions() -> dict[str, str]:
    """Versions of everything that can change a result (read from metadata: no TF import)."""
    out = {"python": platform.python_version()}
    for dist in ("edge-lottery", "tensorflow", "tf-keras", "tensorflow-model-optimization", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Atomically write arrays (uncompressed: bit-exact and fast) under their string keys."""
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write_bytes(path, buffer.getvalue())


def load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as exc:
        raise WorkDirError(expected(f"file {path}", "a readable .npz written by edge-lottery", f"unreadable ({exc})")) from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WorkDirError(expected(f"file {path}", "JSON written by edge-lottery", f"unreadable ({exc})")) from None


def _first_difference(a: Any, b: Any, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.')}: recorded {a!r}, given {b!r}"


class WorkDir:
    """A search work directory, checked on open. Create with :meth:`create_or_resume`."""

    def __init__(self, root: Path, record: dict[str, Any]):
        self.root = root
        self.record = record

    # ---- opening -------------------------------------------------------------------------
    @classmethod
    def create_or_resume(cls, root: str | os.PathLike[str], record: dict[str, Any]) -> WorkDir:
        """Start a new work directory, or reopen one written by the same configuration.

        ``record`` is the content of ``search.json`` for this run: ``{"config", "config_hash",
        "model", "dataset", "versions", ...}``. The config hash, model identity and dataset hash
        must match a recorded one; versions may differ (a warning is the caller's business).
        """
        root = Path(root)
        record = {"format": FORMAT, **record}
        if root.exists() and not root.is_dir():
            raise WorkDirError(expected("work directory", "a directory", f"{root} is a file"))
        entries = [p.name for p in root.iterdir()] if root.exists() else []
        entries = [e for e in entries if not _TMP_RE.match(e)]
        if not entries:
            root.mkdir(parents=True, exist_ok=True)
            atomic_write_json(root / SEARCH_JSON, record)
            return cls(root, record)
        if SEARCH_JSON not in entries:
            raise WorkDirError(
                expected(f"work directory {root}", "empty or an edge-lottery search directory",
                         f"a directory with other files ({', '.join(sorted(entries)[:3])})")
            )
        existing = cls.open(root)
        for key in ("config_hash", "model", "dataset"):
            ours, theirs = record.get(key), existing.record.get(key)
            if key == "dataset":
                ours, theirs = (ours or {}).get("sha256"), (theirs or {}).get("sha256")
            if ours != theirs:
                if key == "config_hash":
                    detail = _first_difference(existing.record.get("config"), record.get("config"))
                else:
                    detail = f"recorded {theirs!r}, given {ours!r}"
                raise WorkDirError(
                    f"work directory {root} holds a different search ({key} differs: {detail}); "
                    "use another --out directory"
                )
        if record.get("versions") != existing.record.get("versions"):
            log.warning("resuming %s with other library versions than it was started with (%s, now %s); "
                        "new levels may not be bit-identical to an uninterrupted run", root,
                        existing.record.get("versions"), record.get("versions"))
        return existing

    @classmethod
    def open(cls, root: str | os.PathLike[str]) -> WorkDir:
        """Open an existing work directory read-only-ish: check its marker and its contents."""
        root = Path(root)
        path = root / SEARCH_JSON
        if not path.is_file():
            raise WorkDirError(expected(f"work directory {root}", f"a {SEARCH_JSON} file", "none"))
        record = _read_json(path)
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            got = record.get("format") if isinstance(record, dict) else type(record).__name__
            raise WorkDirError(expected(f"{path} format", FORMAT, got))
        wd = cls(root, record)
        wd._check_contents()
        return wd

    def _check_contents(self) -> None:
        for entry in self.root.iterdir():
            name = entry.name
            if name in _TOP_LEVEL or _TMP_RE.match(name):
                continue
            if _LEVEL_RE.match(name) and entry.is_dir():
                self._check_level_dir(entry)
                continue
            raise WorkDirError(expected(f"work directory {self.root}", "only files edge-lottery writes",
                                        f"foreign entry {name!r}"))
        controls = self.root / CONTROLS
        if controls.is_dir():
            for branch in controls.iterdir():
                if not branch.is_dir():
                    raise WorkDirError(expected(f"{controls}", "control branch directories", branch.name))
                for level in branch.iterdir():
                    if not (_LEVEL_RE.match(level.name) and level.is_dir()) and not _TMP_RE.match(level.name):
                        raise WorkDirError(expected(f"{branch}", "level_<L> directories", level.name))
                    if level.is_dir():
                        self._check_level_dir(level)

    def _check_level_dir(self, level_dir: Path) -> None:
        for f in level_dir.iterdir():
            if f.name not in (*LEVEL_FILES, COMPLETE) and not _TMP_RE.match(f.name):
                raise WorkDirError(expected(f"level directory {level_dir}", "masks.npz, weights.npz, "
                                            "metrics.json, COMPLETE", f"foreign file {f.name!r}"))
        if (level_dir / COMPLETE).exists():
            self._verify_complete(level_dir)

    def _verify_complete(self, level_dir: Path) -> dict[str, Any]:
        marker = _read_json(level_dir / COMPLETE)
        hashes = marker.get("sha256") if isinstance(marker, dict) else None
        if not isinstance(hashes, dict) or set(hashes) != set(LEVEL_FILES):
            raise WorkDirError(expected(f"{level_dir / COMPLETE}", "a completion marker with file hashes", marker))
        for name, digest in hashes.items():
            path = level_dir / name
            if not path.is_file() or _sha256_file(path) != digest:
                raise WorkDirError(
                    f"work directory is corrupted: {path} does not match its completion marker "
                    "(expected the file recorded when the level finished, received a changed or missing file)"
                )
        return marker

    # ---- paths -------------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        return self.record["config"]

    def level_dir(self, level: int, branch: str = TICKET) -> Path:
        if branch == TICKET:
            return self.root / f"level_{level}"
        return self.root / CONTROLS / branch / f"level_{level}"

    def tensorboard_dir(self, level: int, branch: str = TICKET) -> Path:
        return self.root / TENSORBOARD / branch / f"level_{level}"

    @property
    def plot_path(self) -> Path:
        return self.root / PLOT

    # ---- levels ------------------------------------------------------------------------
    def is_finished(self, level: int, branch: str = TICKET) -> bool:
        d = self.level_dir(level, branch)
        if not (d / COMPLETE).is_file():
            return False
        self._verify_complete(d)
        return True

    def save_level(self, level: int, masks: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray],
                   metrics: Mapping[str, Any], branch: str = TICKET) -> Path:
        """Write a level's files, then its completion marker (last, so a kill leaves it unfinished)."""
        d = self.level_dir(level, branch)
        if (d / COMPLETE).exists():
            raise WorkDirError(expected(f"level directory {d}", "an unfinished level", "a finished level"))
        d.mkdir(parents=True, exist_ok=True)
        save_npz(d / "masks.npz", masks)
        save_npz(d / "weights.npz", weights)
        atomic_write_json(d / "metrics.json", dict(metrics))
        marker = {"sha256": {name: _sha256_file(d / name) for name in LEVEL_FILES}, "level": level, "branch": branch}
        atomic_write_json(d / COMPLETE, marker)
        return d

    def load_level(self, level: int, branch: str = TICKET
                   ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any]]:
        d = self.level_dir(level, branch)
        if not self.is_finished(level, branch):
            raise WorkDirError(expected(f"level {level} of branch {branch}", "a finished level", "unfinished"))
        return load_npz(d / "masks.npz"), load_npz(d / "weights.npz"), _read_json(d / "metrics.json")

    def finished_levels(self, branch: str = TICKET) -> list[int]:
        base = self.root if branch == TICKET else self.root / CONTROLS / branch
        if not base.is_dir():
            return []
        out = []
        for entry in base.iterdir():
            m = _LEVEL_RE.match(entry.name)
            if m and self.is_finished(int(m.group(1)), branch):
                out.append(int(m.group(1)))
        return sorted(out)

    # ---- rewind point, architecture, summary -------------------------------------------
    def save_rewind_point(self, snapshot: Mapping[str, np.ndarray], step: int) -> None:
        save_npz(self.root / REWIND_POINT, {**snapshot, "__step__": np.asarray(step, dtype=np.int64)})

    def has_rewind_point(self) -> bool:
        return (self.root / REWIND_POINT).is_file()

    def load_rewind_point(self) -> tuple[dict[str, np.ndarray], int]:
        arrays = load_npz(self.root / REWIND_POINT)
        if "__step__" not in arrays:
            raise WorkDirError(expected(f"{self.root / REWIND_POINT}", "a rewind point with its step", "no step"))
        step = int(arrays.pop("__step__"))
        return arrays, step

    def save_architecture(self, model_json: str) -> None:
        path = self.root / MODEL_JSON
        if path.exists():
            if path.read_text(encoding="utf-8") != model_json:
                raise WorkDirError(expected(f"{path}", "the same model architecture", "a different one"))
            return
        atomic_write_bytes(path, model_json.encode("utf-8"))

    def read_architecture(self) -> str | None:
        path = self.root / MODEL_JSON
        return path.read_text(encoding="utf-8") if path.is_file() else None

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        path = self.root / SUMMARY_JSON
        text = json.dumps(summary, indent=2, sort_keys=True, default=_jsonable) + "\n"
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            return  # unchanged: keep the file (a finished re-run modifies nothing)
        atomic_write_bytes(path, text.encode("utf-8"))

    def read_summary(self) -> dict[str, Any] | None:
        path = self.root / SUMMARY_JSON
        return _read_json(path) if path.is_file() else None


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# ---- public reader ------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchRecord:
    """A finished (or partly finished) search, read from its work directory.

    ``levels`` are the ticket-branch rows of ``summary.json``; ``best_level`` is the level the
    search chose (see docs/search.md). :meth:`load_model` rebuilds a plain (stripped) tf_keras
    model with the level's trained, masked weights, ready for conversion.
    """

    work_dir: Path
    config: dict[str, Any]
    model_name: str
    dataset_name: str
    dataset: dict[str, Any]
    levels: list[dict[str, Any]]
    controls: dict[str, list[dict[str, Any]]]
    best_level: int | None
    summary: dict[str, Any]

    def masks(self, level: int | str = "best", branch: str = TICKET) -> dict[str, np.ndarray]:
        wd = WorkDir.open(self.work_dir)
        return wd.load_level(self._level(level), branch)[0]

    def _level(self, level: int | str) -> int:
        if level == "best":
            if self.best_level is None:
                raise WorkDirError(expected(f"search {self.work_dir}", "at least one finished level", "none"))
            return int(self.best_level)
        if not isinstance(level, int) or isinstance(level, bool):
            raise WorkDirError(expected("level", "an integer or 'best'", level))
        finished = [row["level"] for row in self.levels]
        if level not in finished:
            raise WorkDirError(expected("level", f"one of the finished levels {finished}", level))
        return level

    def load_model(self, level: int | str = "best", branch: str = TICKET) -> Any:
        """A stripped tf_keras model with the level's trained weights; pruned weights are exactly 0."""
        from edge_lottery import search as search_lib

        wd = WorkDir.open(self.work_dir)
        lvl = self._level(level) if branch == TICKET else int(level)
        masks, weights, _ = wd.load_level(lvl, branch)
        return search_lib.model_from_record(wd, masks, weights)


def open_search(work_dir: str | os.PathLike[str]) -> SearchRecord:
    """Read a search work directory (for ``converters`` and ``edge-lottery export``)."""
    wd = WorkDir.open(work_dir)
    summary = wd.read_summary() or {}
    rows = summary.get("levels", [])
    ticket = [r for r in rows if r.get("branch", TICKET) == TICKET]
    controls: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("branch", TICKET) != TICKET:
            controls.setdefault(r["branch"], []).append(r)
    config = wd.record.get("config", {})
    return SearchRecord(
        work_dir=Path(work_dir), config=config, model_name=config.get("model", ""),
        dataset_name=config.get("dataset", ""), dataset=wd.record.get("dataset", {}), levels=ticket,
        controls=controls, best_level=summary.get("best_level"), summary=summary,
    )
