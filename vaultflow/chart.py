"""The status chart: per target, stored size and duration of every backup over time, with its
drills and failures marked (vaultflow.history gives the series). Drawn with matplotlib (the
`chart` extra, imported here only when a chart is drawn: `vaultflow status` without --chart
never loads it) on a Figure of its own (Agg for PNG, no pyplot), PNG or SVG.

    pages = render(fleet_history(repo, now), "repository local:/backups", now=now)  # [PNG bytes, ...]
    write_chart(histories, "status.png", title, now)   # status.png, status-2.png, ... one per page
    chart_markdown(histories, title, now)              # the status flow's artifact: the pages inline

One panel per target (small multiples, PAGE_TARGETS to a page, 4 across at most), each two
axes over one time axis shared by every panel: stored size above, duration below. Backups are
markers by kind (full: blue square, incremental: green circle, differential: orange diamond);
a drill is a triangle on the duration axis at its restore time (green passed, red failed) with a
thin vertical line; a failed verify is a red X, a failed backup run a red x, at the top of the
size axis with a dotted red line. The size axis turns logarithmic when a panel's sizes span more
than LOG_SPAN (fulls next to small incrementals), and says so.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from vaultflow.errors import ConfigError
from vaultflow.history import BACKUP_RUN, TargetHistory
from vaultflow.manifest import BackupKind
from vaultflow.status import utc_moment
from vaultflow.summary import human_duration, human_size, objective_duration

PAGE_TARGETS = 24
MAX_COLUMNS = 4
LOG_SPAN = 20.0
INSTALL_HINT = "pip install 'vaultflow[chart]'"
FORMATS = {".png": "png", ".svg": "svg", "": "png"}

KIND_STYLE = {
    BackupKind.FULL: ("#1f4e79", "s", "full"),
    BackupKind.INCREMENTAL: ("#2a9d8f", "o", "incremental"),
    BackupKind.DIFFERENTIAL: ("#e07a1f", "D", "differential"),
}
PASSED, FAILED = "#2e7d32", "#c62828"


class ChartUnavailableError(ConfigError):
    """matplotlib (the `chart` extra) is not installed where the chart was asked for."""


def require_matplotlib() -> None:
    """Raise ChartUnavailableError, saying how to install it, when matplotlib cannot be imported
    (the package only, not pyplot: a quick check before anything is read)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ChartUnavailableError(
            f"the chart needs matplotlib, which is not installed here: {INSTALL_HINT}"
        ) from None


def chart_format(path: str | Path) -> str:
    """'svg' for a name ending in .svg, 'png' for .png or no suffix (case ignored). ConfigError
    for another suffix (no JPEG or PDF is written under a name that says so)."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(f"chart file {path}: name it .png or .svg (a {suffix} file is not written)")
    return FORMATS[suffix]


def paginate(histories: Sequence[TargetHistory], per_page: int = PAGE_TARGETS) -> list[list[TargetHistory]]:
    """`histories` in pages of at most `per_page` targets, in order; no target: one empty page
    (which still draws, saying there is nothing to draw)."""
    items = list(histories)
    return [items[i : i + per_page] for i in range(0, len(items), per_page)] or [[]]


def grid(count: int, max_columns: int = MAX_COLUMNS) -> tuple[int, int]:
    """(rows, columns) of `count` panels: 1 -> 1x1, 2 -> 1x2, 3-4 -> 2x2, 5-9 -> 3 across, then 4
    across (a page of 24 is 6x4); never more than `max_columns` across."""
    columns = 1 if count <= 1 else 2 if count <= 4 else 3 if count <= 9 else MAX_COLUMNS
    columns = max(1, min(columns, max_columns))
    return max(1, math.ceil(count / columns)), columns


def short_duration(seconds: float, _pos: Any = None) -> str:
    """A tick label of a logarithmic duration axis: '0.1 s', '10 s', '1000 s', '2.8 h' (its
    decades read best in seconds)."""
    if seconds <= 0:
        return "0"
    if seconds < 10_000:
        return f"{seconds:g} s"
    return f"{seconds / 3600:.3g} h"


SIZE_UNITS = ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB"), (1.0, "B"))
TIME_UNITS = ((7200.0, 3600.0, "h"), (120.0, 60.0, "min"), (0.0, 1.0, "s"))


def axis_unit(values: Sequence[float], what: str) -> tuple[float, str]:
    """(divisor, unit) for a linear axis of `values`: sizes ('stored') in the largest decimal
    unit the biggest value reaches (kB, MB, GB, ...), durations in s, min (from 2 min) or h (from
    2 h), so that ticks are round numbers of one unit."""
    top = max(values, default=0.0)
    if what == "stored":
        return next(((d, u) for d, u in SIZE_UNITS if top >= d), (1.0, "B"))
    return next((d, u) for limit, d, u in TIME_UNITS if top >= limit)


def _value_axis(ax: Any, values: Sequence[float], what: str) -> tuple[float, bool]:
    """Scale and label `ax` for `values` (bytes or seconds); returns (divisor, log): values are
    plotted divided by it (1 on a log axis, whose ticks say their unit). Logarithmic when the
    positive values span more than LOG_SPAN, else linear from 0."""
    from matplotlib import ticker

    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > LOG_SPAN:
        ax.set_yscale("log")
        ax.set_ylabel(f"{what} (log)", fontsize=7)
        ax.yaxis.set_major_formatter(
            ticker.FuncFormatter(lambda v, _pos: human_size(v) if what == "stored" else short_duration(v))
        )
        ax.yaxis.set_minor_locator(ticker.NullLocator())  # decades only: minor ticks cost most of the drawing
        return 1.0, True
    divisor, unit = axis_unit(values, what)
    ax.set_ylim(bottom=0, top=max(values, default=0.0) / divisor * 1.2 or 1.0)  # all 0 (or none): 0 to 1
    ax.set_ylabel(f"{what}, {unit}", fontsize=7)
    return divisor, False


def time_span(histories: Sequence[TargetHistory], now: datetime, since: datetime | None) -> tuple[datetime, datetime]:
    """The time axis every panel shares: from `since` (else the earliest moment of any series,
    else a day before `now`) to `now`, padded by 2% (at least a minute) on both sides."""
    times = [t for h in histories for t in h.times]
    start = since or min(times, default=now - timedelta(days=1))
    pad = max((now - start) * 0.02, timedelta(minutes=1))
    return start - pad, now + pad


def panel_caption(history: TargetHistory) -> str:
    """The line under a panel's name: how many backups, the newest's size and duration, the last
    drill and its restore time against its objective, how many failures."""
    parts = []
    if history.backups:
        newest = history.backups[-1]
        count = f"{len(history.backups)} backup{'s' if len(history.backups) > 1 else ''}"
        parts.append(f"{count}, newest {human_size(newest.stored_bytes)} in {human_duration(newest.seconds)}")
    else:
        parts.append("no backup in this window")
    if history.drills:
        drill = history.drills[-1]
        rto = f", restore {human_duration(drill.seconds)}" if drill.seconds is not None else ""
        goal = f" / {objective_duration(drill.rto_objective_s)}" if drill.rto_objective_s is not None and rto else ""
        parts.append(f"last drill {'ok' if drill.ok else 'FAILED'}{rto}{goal}")
    if history.failures:
        parts.append(f"{len(history.failures)} failure{'s' if len(history.failures) > 1 else ''}")
    return "; ".join(parts)


def wrap_caption(caption: str, width: int) -> str:
    """`caption` on lines of about `width` characters, broken only between its '; ' parts (never
    inside '11 min 40 s')."""
    lines: list[str] = []
    for part in caption.split("; "):
        if lines and len(lines[-1]) + 2 + len(part) <= width:
            lines[-1] += "; " + part
        else:
            lines.append(part)
    return "\n".join(lines)


def _series(values: Sequence[float], divisor: float, log: bool, floor: float) -> list[float]:
    """Values as plotted: divided by the axis unit, or on a log axis at least `floor` (a 0 s or
    0 B point stays visible at the bottom instead of vanishing)."""
    return [max(v, floor) for v in values] if log else [v / divisor for v in values]


def time_locator() -> Any:
    """matplotlib's AutoDateLocator with 3 to 6 ticks, and each unit's intervals reaching the next
    unit (60 s, 60 min, 24 h, 12 months): with only its stock intervals a span such as 170 s or
    2.8 h fits none of them at 6 ticks and matplotlib warns on every chart."""
    from matplotlib import dates

    locator = dates.AutoDateLocator(minticks=3, maxticks=6)
    for unit, whole in ((dates.SECONDLY, 60), (dates.MINUTELY, 60), (dates.HOURLY, 24), (dates.MONTHLY, 12)):
        locator.intervald[unit] = [*locator.intervald[unit], whole]
    return locator


def _draw_target(fig: Any, spec: Any, history: TargetHistory, span: tuple[datetime, datetime], wrap: int) -> None:
    from matplotlib import dates
    from matplotlib.transforms import blended_transform_factory

    inner = spec.subgridspec(2, 1, height_ratios=[3, 2], hspace=0.08)
    ax_size = fig.add_subplot(inner[0])
    ax_time = fig.add_subplot(inner[1], sharex=ax_size)
    name = history.name if len(history.name) <= wrap else history.name[: wrap - 1] + "…"
    caption = wrap_caption(panel_caption(history), wrap)
    ax_size.set_title(f"{name}\n{caption}", fontsize=7.5, loc="left")

    sizes = [float(p.stored_bytes) for p in history.backups]
    timed = [d for d in history.drills if d.seconds is not None]
    seconds = [p.seconds for p in history.backups] + [d.seconds or 0.0 for d in timed]
    size_div, size_log = _value_axis(ax_size, sizes, "stored")
    time_div, time_log = _value_axis(ax_time, seconds, "duration")
    size_floor = min([v for v in sizes if v > 0], default=1.0) / 2
    time_floor = min([v for v in seconds if v > 0], default=0.01) / 2

    for kind, (color, marker, label) in KIND_STYLE.items():
        points = [p for p in history.backups if p.kind == kind]
        if not points:
            continue
        times = [p.time for p in points]
        style = {"color": color, "marker": marker, "s": 16, "zorder": 3}
        stored = _series([float(p.stored_bytes) for p in points], size_div, size_log, size_floor)
        ax_size.scatter(times, stored, gid=f"{history.name}|stored|{label}", **style)
        took = _series([p.seconds for p in points], time_div, time_log, time_floor)
        ax_time.scatter(times, took, gid=f"{history.name}|seconds|{label}", **style)

    near_top = blended_transform_factory(ax_time.transData, ax_time.transAxes)
    for ok, color, state in ((True, PASSED, "passed"), (False, FAILED, "failed")):
        drills = [d for d in history.drills if d.ok == ok]
        for d in drills:
            for ax in (ax_size, ax_time):
                ax.axvline(d.time, color=color, linewidth=0.8, alpha=0.5, zorder=1)
        with_time = [d for d in drills if d.seconds is not None]
        if with_time:
            restore = _series([d.seconds or 0.0 for d in with_time], time_div, time_log, time_floor)
            ax_time.scatter(
                [d.time for d in with_time],
                restore,
                marker="^",
                color=color,
                s=30,
                zorder=4,
                gid=f"{history.name}|drill|{state}",
            )
        without = [d for d in drills if d.seconds is None]
        if without:  # a record from before drills kept their restore time: at the top edge
            ax_time.scatter(
                [d.time for d in without],
                [0.92] * len(without),
                marker="^",
                color=color,
                s=30,
                transform=near_top,
                zorder=4,
                gid=f"{history.name}|drill|{state}-untimed",
            )

    edge = blended_transform_factory(ax_size.transData, ax_size.transAxes)
    for is_run, marker, label in ((True, "x", "backup-run-failed"), (False, "X", "check-failed")):
        marks = [m for m in history.failures if (m.kind == BACKUP_RUN) == is_run]
        for m in marks:
            for ax in (ax_size, ax_time):
                ax.axvline(m.time, color=FAILED, linewidth=0.8, linestyle=":", zorder=1)
        if marks:
            ax_size.scatter(
                [m.time for m in marks],
                [0.9] * len(marks),
                marker=marker,
                color=FAILED,
                s=36,
                linewidths=1.6,
                transform=edge,
                zorder=5,
                gid=f"{history.name}|failure|{label}",
            )

    ax_size.set_xlim(*span)
    ax_time.xaxis.set_major_locator(locator := time_locator())
    ax_time.xaxis.set_major_formatter(dates.ConciseDateFormatter(locator, show_offset=True))
    ax_size.tick_params(labelbottom=False, labelsize=7)
    ax_time.tick_params(labelsize=7)
    ax_time.xaxis.get_offset_text().set_fontsize(7)
    for ax in (ax_size, ax_time):
        ax.grid(True, color="#dddddd", linewidth=0.6)
        ax.set_axisbelow(True)


def _legend(fig: Any, y: float) -> None:
    from matplotlib.lines import Line2D

    def handle(marker: str, color: str, label: str) -> Line2D:
        return Line2D([], [], linestyle="", marker=marker, color=color, markersize=6, markeredgewidth=1.5, label=label)

    handles = [handle(marker, color, label) for color, marker, label in KIND_STYLE.values()]
    handles += [
        handle("^", PASSED, "drill passed (at its restore time)"),
        handle("^", FAILED, "drill failed"),
        handle("X", FAILED, "verify failed"),
        handle("x", FAILED, "backup run failed"),
    ]
    fig.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, y),
        ncol=len(handles),
        fontsize=7,
        frameon=False,
        columnspacing=1.2,
        handletextpad=0.3,
    )


# Inches: a panel's width by columns across, its height, the header (title and legend).
PANEL_WIDTH = {1: 8.0, 2: 5.6, 3: 4.8}
PANEL_HEIGHT, HEADER = 3.3, 0.8


def _figure(page: Sequence[TargetHistory], title: str, span: tuple[datetime, datetime], max_columns: int) -> Any:
    from matplotlib.figure import Figure

    rows, columns = grid(len(page), max_columns)
    panel = PANEL_WIDTH.get(columns, 4.4)
    height = rows * PANEL_HEIGHT + HEADER
    fig = Figure(figsize=(max(panel * columns, 8.0), height))
    fig.suptitle(title, fontsize=10, y=1 - 0.08 / height, va="top")
    if not page:  # no legend either: nothing it would explain
        fig.text(0.5, 0.4, "no backups to draw: the repository holds none in this window", ha="center", fontsize=10)
        return fig
    _legend(fig, 1 - 0.32 / height)
    width = fig.get_figwidth()
    spec = fig.add_gridspec(
        rows,
        columns,
        top=1 - (HEADER + 0.45) / height,
        bottom=0.4 / height,
        left=0.75 / width,
        right=1 - 0.2 / width,
        hspace=0.6,
        wspace=0.42,
    )
    wrap = int(panel * 12)  # characters of a 7.5 pt caption across one panel
    for index, history in enumerate(page):
        _draw_target(fig, spec[index // columns, index % columns], history, span, wrap)
    return fig


def render(
    histories: Sequence[TargetHistory],
    title: str,
    fmt: str = "png",
    now: datetime | None = None,
    since: datetime | None = None,
    dpi: int = 100,
    max_columns: int = MAX_COLUMNS,
) -> list[bytes]:
    """The chart of `histories` as image bytes, one per page of PAGE_TARGETS targets, in `fmt`
    ('png' or 'svg'); every page shares one time axis, from `since` (else the first moment drawn)
    to `now` (default: this host's clock). `dpi`: PNG resolution (a page of 24 targets, 4
    across, is about 1760 x 2060 pixels at 100); `max_columns`: panels across at most.
    ChartUnavailableError when matplotlib is missing."""
    require_matplotlib()
    now = utc_moment(now)
    span = time_span(histories, now, utc_moment(since) if since is not None else None)
    pages = paginate(histories)
    images = []
    for number, page in enumerate(pages, 1):
        heading = title if len(pages) == 1 else f"{title} (page {number} of {len(pages)})"
        fig = _figure(page, heading, span, max_columns)
        out = io.BytesIO()
        fig.savefig(out, format=fmt, dpi=dpi, metadata={"Date": None} if fmt == "svg" else None)
        images.append(compact_png(out.getvalue()) if fmt == "png" else out.getvalue())
    return images


def compact_png(png: bytes) -> bytes:
    """`png` with a palette of 256 colours (Pillow's fast octree: the chart's few colours and
    their anti-aliased edges survive), about a third of the RGBA file matplotlib writes: the
    status artifact carries its pages inline, once per run."""
    from PIL import Image

    out = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").quantize(256, Image.Quantize.FASTOCTREE).save(out, "PNG", optimize=True)
    return out.getvalue()


def page_paths(path: str | Path, count: int) -> list[Path]:
    """Where `count` pages go: `path` itself, then '<stem>-2<suffix>', '<stem>-3<suffix>', ..."""
    path = Path(path)
    return [path] + [path.with_name(f"{path.stem}-{n}{path.suffix}") for n in range(2, count + 1)]


def write_chart(
    histories: Sequence[TargetHistory],
    path: str | Path,
    title: str,
    now: datetime | None = None,
    since: datetime | None = None,
) -> list[Path]:
    """Draw `histories` (render) into `path` (PNG, or SVG for a .svg name: chart_format) and
    further pages beside it (page_paths); returns the files written. ConfigError for another
    suffix or a file that cannot be written (the message names it), ChartUnavailableError
    without matplotlib."""
    fmt = chart_format(path)
    images = render(histories, title, fmt, now, since)
    paths = page_paths(path, len(images))
    for where, image in zip(paths, images, strict=True):
        try:
            where.write_bytes(image)
        except OSError as exc:
            raise ConfigError(f"cannot write the chart to {where}: {exc.strerror or exc}") from None
    return paths


def chart_markdown(
    histories: Sequence[TargetHistory],
    title: str,
    now: datetime | None = None,
    since: datetime | None = None,
    dpi: int = 90,
) -> str:
    """A markdown page with every page of the chart inline as a PNG data URI (Prefect's UI draws
    `data:image/...` images in markdown artifacts; docs/architecture.md 'Issue 12: charts'), two
    panels across (the UI shrinks a wider image to its column, and its text with it), and one
    line per target (panel_caption) under it, for reading and searching."""
    images = render(histories, title, "png", now, since, dpi, max_columns=2)
    lines = [f"### {title}", ""]
    for number, image in enumerate(images, 1):
        lines += [f"![status chart, page {number}](data:image/png;base64,{base64.b64encode(image).decode()})", ""]
    lines += [f"- **{h.name}**: {panel_caption(h)}" for h in histories]
    return "\n".join(lines)
