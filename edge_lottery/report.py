"""Tables, progress, TensorBoard logs and the accuracy-vs-density plot of a search.

The library logs through :mod:`logging` (never ``print``); the rich progress bar is opt-in
(``progress=True``, which the CLI sets) and the table is rendered by the CLI. The plot follows the
LTH paper's figures: percent of weights remaining on a log axis, reversed (dense on the left).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edge_lottery.atomic import atomic_open

log = logging.getLogger("edge_lottery.search")

BRANCH_STYLE = {"ticket": ("tab:blue", "o", "winning ticket"), "reinit": ("tab:orange", "s", "random reinit"),
                "random_prune": ("tab:green", "^", "random pruning")}


def tensorboard_callback(log_dir: Path) -> Any | None:
    """TensorBoard scalars per validation point (no graph, no profiler: cheap and small).

    ``None`` (with a warning) when the ``tensorboard`` package is absent: TensorFlow 2.21 does not
    depend on it, and a search should not fail for want of its logs.
    """
    import importlib.util

    import tf_keras

    if importlib.util.find_spec("tensorboard") is None:
        log.warning("tensorboard is not installed; no TensorBoard logs (pip install tensorboard)")
        return None

    return tf_keras.callbacks.TensorBoard(log_dir=str(log_dir), write_graph=False, profile_batch=0,
                                          update_freq="epoch")


def progress_callback(branch: str, level: int, start_step: int, end_step: int, *, rich_display: bool = False) -> Any:
    """Per-level progress: a rich bar (``rich_display``) or a log line per validation point."""
    import tf_keras

    class Progress(tf_keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self._bar: Any = None
            self._task: Any = None

        def on_train_begin(self, logs: Any = None) -> None:
            self._t0 = time.perf_counter()
            if rich_display and self._bar is None:
                from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

                self._bar = Progress(TextColumn(f"[bold]{branch} level {level}"), BarColumn(),
                                     TextColumn("{task.completed}/{task.total} steps"),
                                     TextColumn("{task.fields[info]}"), TimeElapsedColumn(), transient=True)
                self._task = self._bar.add_task("train", total=end_step - start_step, info="")
                self._bar.start()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            logs = logs or {}
            step = int(self.model.optimizer.iterations.numpy())
            acc = logs.get("val_accuracy")
            info = f"val_loss {logs.get('val_loss', float('nan')):.4f}" + (f" val_acc {acc:.4f}" if acc is not None else "")
            if self._bar is not None:
                self._bar.update(self._task, completed=step - start_step, info=info)
            log.debug("%s level %d step %d/%d %s", branch, level, step, end_step, info)
            if step >= end_step:
                self._close()

        def _close(self) -> None:
            if self._bar is not None:
                self._bar.stop()
                self._bar = None
            log.info("%s level %d trained %d steps in %.1f s", branch, level, end_step - start_step,
                     time.perf_counter() - self._t0)

    return Progress()


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def level_table(rows: Sequence[Mapping[str, Any]], *, best_level: int | None = None, title: str = "") -> Any:
    """A rich Table: one row per level and branch."""
    from rich.table import Table

    table = Table(title=title or None)
    for name, justify in (("level", "right"), ("branch", "left"), ("weights left %", "right"),
                          ("test acc %", "right"), ("best val acc %", "right"), ("early stop step", "right"),
                          ("test acc @ES %", "right"), ("train s", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        mark = " *" if r["branch"] == "ticket" and r["level"] == best_level else ""
        table.add_row(str(r["level"]) + mark, r["branch"], f"{100 * r['density']:.2f}", _pct(r.get("test_accuracy")),
                      _pct(r.get("best_val_accuracy")), str(r.get("early_stop_step", "-")),
                      _pct(r.get("test_accuracy_at_early_stop")), f"{r['train_seconds']:.1f}")
    return table


def render_table(rows: Sequence[Mapping[str, Any]], *, best_level: int | None = None, title: str = "",
                 width: int = 120) -> str:
    """The level table as plain text (for logs and tests)."""
    import io

    from rich.console import Console

    console = Console(width=width, file=io.StringIO())
    console.print(level_table(rows, best_level=best_level, title=title))
    return console.file.getvalue()


def plot_accuracy_vs_density(rows: Sequence[Mapping[str, Any]], path: Path, *, title: str = "") -> Path:
    """Test accuracy against percent of weights remaining (log x, reversed), one line per branch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    metric = "test_accuracy" if any(r.get("test_accuracy") is not None for r in rows) else "test_loss"
    dense = [r for r in rows if r["level"] == 0]
    branches = list(dict.fromkeys(r["branch"] for r in rows))
    for branch in branches:
        pts = sorted(((100 * r["density"], r[metric]) for r in rows if r["branch"] == branch and r.get(metric) is not None),
                     reverse=True)
        if branch != "ticket":  # controls start from the shared dense level
            pts = sorted([(100 * d["density"], d[metric]) for d in dense] + pts, reverse=True)
        if not pts:
            continue
        color, marker, label = BRANCH_STYLE.get(branch, (None, "x", branch))
        ax.plot([p[0] for p in pts], [100 * p[1] if metric == "test_accuracy" else p[1] for p in pts],
                marker=marker, color=color, label=label)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("percent of weights remaining")
    ax.set_ylabel("test accuracy (%)" if metric == "test_accuracy" else "test loss")
    ticks = sorted({round(100 * r["density"], 1) for r in rows}, reverse=True)
    if len(ticks) > 10:  # label every n-th level, always the densest and the sparsest
        step = -(-len(ticks) // 8)
        ticks = sorted(set(ticks[::step]) | {ticks[-1]}, reverse=True)
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}" for t in ticks], rotation=45)
    ax.minorticks_off()
    ax.grid(True, alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png")
    plt.close(fig)
    return path
