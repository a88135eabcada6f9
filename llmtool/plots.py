"""PNG pictures: training curves, a confusion matrix, attention maps.

matplotlib is an optional extra (``pip install 'llmtool[plot]'``), imported only inside the
functions here. Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas, never through
pyplot, so no global figure state is touched and no display is needed. Each picture is written to
a temporary file beside its destination and then renamed over it: a reader never sees half a PNG.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmtool.errors import UsageError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from llmtool.io.streams import Console

DPI = 120  # pixels per inch of the PNGs
BASE_FONT = "DejaVu Sans"  # ships with matplotlib: always there, covers Latin, Greek, Cyrillic
MAX_LABEL = 16  # characters of a class name or token shown before it is cut with an ellipsis
MAX_TICKS = 64  # beyond this many tokens, only every n-th one is labelled
# Metrics between 0 and 1, which share one axis; any other metric (perplexity) gets its own.
BOUNDED_METRICS = ("accuracy", "macro_f1", "f1", "precision", "recall", "micro_f1", "weighted_f1")
# Fonts with CJK glyphs, by family name, best first; and where they usually live, for when
# matplotlib's font cache was built before they were installed.
CJK_FAMILIES = (
    "Noto Sans CJK SC",
    "Noto Sans CJK JP",
    "Noto Sans CJK TC",
    "Noto Sans CJK KR",
    "Noto Serif CJK SC",
    "Source Han Sans SC",
    "Source Han Sans",
    "WenQuanYi Micro Hei",
    "WenQuanYi Zen Hei",
    "Droid Sans Fallback",
    "AR PL UMing CN",
    "AR PL UKai CN",
    "PingFang SC",
    "Hiragino Sans GB",
    "Microsoft YaHei",
    "SimHei",
    "Arial Unicode MS",
)
CJK_FILES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/wenquanyi/wqy-microhei/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/usr/share/fonts/droid/DroidSansFallbackFull.ttf",
    "/System/Library/Fonts/PingFang.ttc",
    "/System/Library/Fonts/Hiragino Sans GB.ttc",
    "/Library/Fonts/Arial Unicode.ttf",
    "C:/Windows/Fonts/msyh.ttc",
    "C:/Windows/Fonts/simhei.ttf",
)
_MISSING_GLYPH = re.compile(r"Glyph .* missing from (font|current font)")


# --------------------------------------------------------------------------- public


def training_curves(
    metrics: dict[str, Any],
    path: str | os.PathLike[str],
    train_losses: Sequence[tuple[int, float]] | None = None,
    *,
    title: str | None = None,
) -> Path:
    """Loss against steps (left) and the task metrics (right) of a training run.

    ``metrics`` is a run's ``metrics.json``: its ``history`` holds one entry per evaluation
    (``step``, ``loss`` and metrics such as ``accuracy``, ``macro_f1`` or ``perplexity``) and its
    ``train`` the last training loss. ``train_losses`` is the logged training loss as
    ``(step, loss)`` pairs; without it only the final training loss is shown, as one point.
    """
    history = [h for h in metrics.get("history") or [] if isinstance(h, dict) and "step" in h]
    train = _train_series(metrics, train_losses)
    valid = [(int(h["step"]), float(h["loss"])) for h in history if _number(h.get("loss"))]
    names = _metric_names(history)
    if not train and not valid and not names:
        raise UsageError("nothing to plot: the metrics have no training loss and no evaluation history")

    Figure, _ = _matplotlib("plotting training curves")
    fig = Figure(figsize=(11 if names else 6.5, 4.6), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, 2 if names else 1, squeeze=False, sharex=True)[0]
    best_step = metrics.get("best_step")

    loss_ax = axes[0]
    if train:
        loss_ax.plot(*zip(*train, strict=True), label="train loss", color="tab:blue", **_line_style(train))
    if valid:
        loss_ax.plot(*zip(*valid, strict=True), label="validation loss", color="tab:orange", **_line_style(valid))
    _mark_best(loss_ax, best_step)
    _decorate(loss_ax, "Loss", "step", "loss")

    if names:
        _plot_metrics(axes[1], history, names, best_step)
    _step_axis(loss_ax, [s for s, _ in train + valid] + [int(h["step"]) for h in history])

    fig.suptitle(title or _curves_title(metrics, names))
    return _save(fig, path)


def confusion_matrix(
    labels: Sequence[str],
    matrix: Sequence[Sequence[int]],
    path: str | os.PathLike[str],
    title: str | None = None,
    *,
    console: Console | None = None,
) -> Path:
    """A heatmap of counts: rows are the true labels, columns the predicted ones."""
    n = len(labels)
    if n == 0:
        raise UsageError("a confusion matrix needs at least one label")
    if len(matrix) != n or any(len(row) != n for row in matrix):
        raise UsageError(f"the confusion matrix must be {n} x {n}, one row and one column per label")
    counts = [[int(c) for c in row] for row in matrix]
    total = sum(map(sum, counts))
    correct = sum(counts[i][i] for i in range(n))

    Figure, _ = _matplotlib("plotting a confusion matrix")
    side = min(max(4.8, 0.5 * n + 2.8), 14.0)
    fig = Figure(figsize=(side + 1.0, side), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(counts, cmap="Blues", vmin=0, vmax=max(1, max(map(max, counts))), aspect="equal")
    fig.colorbar(image, ax=ax, shrink=0.8, label="count")

    families = _font_families()
    names = [_short(str(label)) for label in labels]
    ax.set_xticks(range(n), names, fontfamily=families, **_rotation(names))
    ax.set_yticks(range(n), names, fontfamily=families)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.tick_params(length=0)
    ax.set_xticks([i - 0.5 for i in range(1, n)], minor=True)
    ax.set_yticks([i - 0.5 for i in range(1, n)], minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="minor", length=0)
    for side_name in ("top", "right", "bottom", "left"):
        ax.spines[side_name].set_visible(False)

    size = 11 if n <= 8 else 9 if n <= 14 else 7
    threshold = image.norm.vmax * 0.55
    for i, row in enumerate(counts):
        for j, count in enumerate(row):
            colour = "white" if count > threshold else "black"
            ax.text(j, i, f"{count}", ha="center", va="center", color=colour, fontsize=size)

    accuracy = f", accuracy {correct / total:.3f}" if total else ""
    fig.suptitle(title or f"Confusion matrix (n={total}{accuracy})")
    return _save(fig, path, console)


def attention_map(
    tokens: Sequence[str],
    weights: Any,
    path: str | os.PathLike[str],
    *,
    layer: int,
    head: int | None,
    console: Console | None = None,
) -> Path:
    """Attention weights as heatmaps: queries down, attended-to tokens across.

    ``weights`` is an array (or nested lists) shaped ``(heads, seq, seq)`` or ``(seq, seq)``. With
    a ``head`` (or 2-D weights), one large map labelled with the tokens on both axes; with
    ``head=None``, a grid of every head.
    """
    import numpy as np

    array = np.asarray(weights, dtype=np.float32)
    if array.ndim not in (2, 3) or array.shape[-1] != array.shape[-2]:
        raise UsageError(f"attention weights must be (heads, seq, seq) or (seq, seq), not {tuple(array.shape)}")
    seq = array.shape[-1]
    if len(tokens) != seq:
        raise UsageError(f"{len(tokens)} tokens but the attention weights cover {seq}")
    if array.ndim == 3 and head is not None:
        if not -array.shape[0] <= head < array.shape[0]:
            raise UsageError(f"head {head} is out of range: the layer has heads 0 to {array.shape[0] - 1}")
        head = head % array.shape[0]
        array = array[head]

    Figure, _ = _matplotlib("plotting attention")
    labels = [_short(t, 12) for t in tokens]
    if array.ndim == 2:
        side = min(max(5.0, 0.28 * seq + 2.5), 16.0)
        fig = Figure(figsize=(side + 1.2, side), dpi=DPI, layout="constrained")
        ax = fig.add_subplot()
        image = _heatmap(ax, array, labels, ticks=True, side=side)
        fig.colorbar(image, ax=ax, shrink=0.8, label="attention weight")
        ax.set_xlabel("attended to (key)")
        ax.set_ylabel("query")
        fig.suptitle(f"Attention, layer {layer}" + (f", head {head}" if head is not None else ""))
    else:
        heads = array.shape[0]
        cols = math.ceil(math.sqrt(heads))
        rows = math.ceil(heads / cols)
        ticks = seq <= 24  # tokens are readable in a small panel only for short inputs
        cell = min(max(2.6, 0.16 * seq + 1.2), 6.0, 16.0 / cols)
        fig = Figure(figsize=(cols * cell + 1.2, rows * cell + 0.6), dpi=DPI, layout="constrained")
        grid = fig.subplots(rows, cols, squeeze=False)
        image = None
        for index, ax in enumerate(grid.flat):
            if index >= heads:
                ax.set_axis_off()
                continue
            image = _heatmap(ax, array[index], labels, ticks=ticks, side=cell, vmax=float(array.max()))
            ax.set_title(f"head {index}", fontsize=10)
            if ticks:  # labels on the outer edges only: the inner panels share them
                if index % cols:
                    ax.tick_params(labelleft=False)
                if index + cols < heads:
                    ax.tick_params(labelbottom=False)
        if image is not None:
            fig.colorbar(image, ax=grid.ravel().tolist(), shrink=0.6, label="attention weight")
        fig.suptitle(f"Attention, layer {layer}, all {heads} heads (queries down, keys across)")
    return _save(fig, path, console)


def require(purpose: str) -> None:
    """A usage error naming the extra to install when matplotlib is missing (checked before slow work)."""
    _matplotlib(purpose)


def available() -> bool:
    """Whether matplotlib can be imported (the ``plot`` extra is installed)."""
    try:
        _matplotlib("plotting")
    except UsageError:
        return False
    return True


def cjk_font() -> str | None:
    """The family name of an installed font with CJK glyphs, or None when there is none."""
    return _cjk_font()


# --------------------------------------------------------------------------- training curves


def _train_series(metrics: dict[str, Any], train_losses: Sequence[tuple[int, float]] | None) -> list[tuple[int, float]]:
    if train_losses:
        return sorted((int(step), float(loss)) for step, loss in train_losses if _number(loss))
    train = metrics.get("train") or {}
    if _number(train.get("loss")) and train.get("steps") is not None:
        return [(int(train["steps"]), float(train["loss"]))]
    return []


def _metric_names(history: list[dict[str, Any]]) -> list[str]:
    names: dict[str, None] = {}
    for entry in history:
        for key, value in entry.items():
            if key not in ("epoch", "step", "loss") and _number(value):
                names[key] = None
    return list(names)


def _plot_metrics(ax: Axes, history: list[dict[str, Any]], names: list[str], best_step: Any) -> None:
    bounded = [n for n in names if n in BOUNDED_METRICS]
    unbounded = [n for n in names if n not in BOUNDED_METRICS]
    colours = iter(("tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"))
    lines: list[Any] = []
    main, other = (bounded, unbounded) if bounded else (unbounded, [])
    for name in main:
        lines += ax.plot(*_series(history, name), label=name, color=next(colours, None), **_line_style(history))
    ylabel = "score" if bounded else main[0] if len(main) == 1 else "value"
    if other:  # perplexity beside accuracy: its own axis on the right, since its scale is unrelated
        twin = ax.twinx()
        for name in other:
            lines += twin.plot(
                *_series(history, name), label=name, color=next(colours, None), linestyle="--", **_line_style(history)
            )
        twin.set_ylabel(other[0] if len(other) == 1 else "value")
    _mark_best(ax, best_step)
    _decorate(ax, "Validation metrics", "step", ylabel, legend=False)
    # with a second axis, "best" would only avoid the first axis's lines: put the legend below
    where = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.14), "ncol": len(lines)} if other else {"loc": "best"}
    ax.legend(lines, [str(line.get_label()) for line in lines], fontsize=9, **where)


def _step_axis(ax: Axes, steps: list[int]) -> None:
    """Whole steps on the axis; a run evaluated at one step gets a little room either side."""
    if steps and max(steps) - min(steps) < 2:
        low, high = min(steps), max(steps)
        ax.set_xlim(low - 1, high + 1)
        ax.set_xticks(range(low - 1, high + 2))


def _series(history: list[dict[str, Any]], name: str) -> tuple[list[int], list[float]]:
    points = [(int(h["step"]), float(h[name])) for h in history if _number(h.get(name))]
    return [s for s, _ in points], [v for _, v in points]


def _line_style(points: Sequence[Any]) -> dict[str, Any]:
    """Markers when there are few points, so that a single evaluation still shows."""
    return {"marker": "o", "markersize": 5 if len(points) < 30 else 2.5, "linewidth": 1.6}


def _mark_best(ax: Axes, best_step: Any) -> None:
    if isinstance(best_step, int) and not isinstance(best_step, bool):
        ax.axvline(best_step, color="grey", linestyle=":", linewidth=1, label=f"best (step {best_step})")


def _decorate(ax: Axes, title: str, xlabel: str, ylabel: str, *, legend: bool = True) -> None:
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if legend:
        ax.legend(loc="best", fontsize=9)


def _curves_title(metrics: dict[str, Any], names: list[str]) -> str:
    train = metrics.get("train") or {}
    parts = ["Training curves"]
    if train.get("steps") is not None:
        parts.append(f"{train['steps']} steps")
    if train.get("epochs") is not None:
        parts.append(f"{train['epochs']:g} epoch" + ("" if train["epochs"] == 1 else "s"))
    best = metrics.get("best_metric")
    valid = metrics.get("valid") or {}
    if best and _number(valid.get(best)):
        parts.append(f"best {best} {valid[best]:.4g}")
    return ", ".join(parts)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# --------------------------------------------------------------------------- heatmaps and labels


def _heatmap(ax: Axes, weights: Any, labels: list[str], *, ticks: bool, side: float, vmax: float | None = None) -> Any:
    """One map; the colours span 0 to the largest weight, since weights over long inputs are all small."""
    top = vmax if vmax is not None else float(weights.max())
    image = ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=max(top, 1e-6), aspect="equal", interpolation="nearest")
    seq = len(labels)
    if not ticks:
        ax.set_xticks([])
        ax.set_yticks([])
        return image
    step = max(1, math.ceil(seq / MAX_TICKS))
    positions = list(range(0, seq, step))
    shown = [labels[i] for i in positions]
    families = _font_families()
    size = _tick_size(side, len(positions))
    ax.set_xticks(positions, shown, fontfamily=families, rotation=90, fontsize=size)
    ax.set_yticks(positions, shown, fontfamily=families, fontsize=size)
    ax.tick_params(length=0)
    return image


def _tick_size(side: float, count: int) -> float:
    """A font size (points) that lets ``count`` labels fit along ``side`` inches, within 5 to 10."""
    room = side * 72 * 0.75 / max(count, 1)  # points per label, the map taking about 3/4 of the side
    return max(5.0, min(10.0, room * 0.8))


def _rotation(labels: list[str]) -> dict[str, Any]:
    if len(labels) <= 4 and max(map(len, labels)) <= 8:
        return {}
    return {"rotation": 45, "ha": "right", "rotation_mode": "anchor"}


def _short(text: str, limit: int = MAX_LABEL) -> str:
    text = " ".join(text.split()) or repr(text)  # a whitespace token would be invisible
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------- matplotlib, fonts, files


def _matplotlib(purpose: str) -> tuple[Any, Any]:
    """``Figure`` and ``FigureCanvasAgg``, or a usage error saying how to install the extra."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError(f"{purpose} needs matplotlib: pip install 'llmtool[plot]'") from None
    return Figure, FigureCanvasAgg


@functools.lru_cache(maxsize=1)
def _cjk_font() -> str | None:
    try:
        from matplotlib import font_manager
    except ImportError:
        return None
    installed = {font.name for font in font_manager.fontManager.ttflist}
    for family in CJK_FAMILIES:
        if family in installed:
            return family
    # matplotlib caches the font list when it first runs; fonts installed later are not in it
    for file in CJK_FILES:
        if os.path.isfile(file):
            with contextlib.suppress(Exception):  # an unreadable font file is as good as none
                font_manager.fontManager.addfont(file)
                return str(font_manager.FontProperties(fname=file).get_name())
    return None


def _font_families() -> list[str]:
    """DejaVu Sans first, for the look; then a CJK font, which matplotlib falls back to per glyph."""
    cjk = _cjk_font()
    return [BASE_FONT, cjk] if cjk else [BASE_FONT]


@contextlib.contextmanager
def _glyph_warnings(console: Console | None) -> Iterator[None]:
    """Turn matplotlib's warning per missing glyph into one line, or none without a console."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    missing = False
    for warning in caught:
        if _MISSING_GLYPH.search(str(warning.message)):
            missing = True
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    if missing and console is not None:
        console.warn(
            "some characters have no glyph in the installed fonts and show as boxes; install a CJK font "
            "(e.g. fonts-noto-cjk) for Chinese, Japanese or Korean text"
        )


def _save(fig: Figure, path: str | os.PathLike[str], console: Console | None = None) -> Path:
    """Render to a temporary PNG beside ``path``, then rename it into place."""
    _, FigureCanvasAgg = _matplotlib("saving a plot")
    FigureCanvasAgg(fig)
    target = Path(path)
    handle, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    try:
        with os.fdopen(handle, "wb") as out, _glyph_warnings(console):
            # "tight" as well as the constrained layout: an equal-aspect map can push a label off the edge
            fig.savefig(out, format="png", dpi=DPI, facecolor="white", bbox_inches="tight", pad_inches=0.15)
        os.chmod(temp, 0o666 & ~_umask())  # mkstemp makes the file private; a PNG is not
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return target


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
