"""The status chart's layout and drawing (vaultflow.chart) on series made here: pages and grids
for 1 to 50 targets, an empty repository, a target with one backup, the file names and formats
it accepts, the captions, and a missing matplotlib. The series from a real repository are
tested in tests/integration/test_status_chart.py."""

from __future__ import annotations

import io
import sys
from datetime import UTC, datetime, timedelta

import pytest
from PIL import Image

from vaultflow.chart import (
    INSTALL_HINT,
    PAGE_TARGETS,
    ChartUnavailableError,
    axis_unit,
    chart_format,
    grid,
    page_paths,
    paginate,
    panel_caption,
    render,
    require_matplotlib,
    wrap_caption,
)
from vaultflow.errors import ConfigError
from vaultflow.history import BACKUP_RUN, BackupPoint, Mark, TargetHistory
from vaultflow.manifest import BackupKind, new_backup_id

NOW = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)


def history(name: str, backups: int = 1, **kw) -> TargetHistory:
    """A target with `backups` daily backups up to NOW (a full every 7th, else incrementals)."""
    points = []
    for day in range(backups):
        when = NOW - timedelta(days=backups - day)
        kind = BackupKind.FULL if day % 7 == 0 else BackupKind.INCREMENTAL
        size = 2_000_000 if kind == BackupKind.FULL else 40_000
        points.append(BackupPoint(new_backup_id(kind, when), kind, when, size, size / 1e6))
    return TargetHistory("postgres", name, tuple(points), **kw)


def png(data: bytes) -> Image.Image:
    Image.open(io.BytesIO(data)).verify()
    return Image.open(io.BytesIO(data))


@pytest.mark.parametrize(
    ("count", "expected"),
    [(1, (1, 1)), (2, (1, 2)), (4, (2, 2)), (5, (2, 3)), (9, (3, 3)), (10, (3, 4)), (24, (6, 4))],
)
def test_grid_grows_to_four_across(count, expected):
    assert grid(count) == expected


def test_grid_keeps_to_the_columns_asked_for():
    assert grid(24, max_columns=2) == (12, 2) and grid(1, max_columns=2) == (1, 1)


def test_fifty_targets_go_on_three_pages_named_after_the_file(tmp_path):
    pages = paginate([history(f"db{i}") for i in range(50)])
    assert [len(p) for p in pages] == [PAGE_TARGETS, PAGE_TARGETS, 2]
    assert [p[0].target for p in pages] == ["db0", "db24", "db48"]
    assert page_paths(tmp_path / "fleet.png", 3) == [tmp_path / n for n in ("fleet.png", "fleet-2.png", "fleet-3.png")]
    assert paginate([]) == [[]], "nothing to draw still draws one page that says so"


def test_many_targets_render_one_image_per_page():
    images = render([history(f"db{i:02d}", backups=3) for i in range(PAGE_TARGETS + 1)], "fleet", now=NOW)
    assert len(images) == 2
    first, second = png(images[0]), png(images[1])
    assert first.mode == "P", "a palette PNG: a third of the size of matplotlib's RGBA"
    assert 1500 <= first.width <= 2000 and 1800 <= first.height <= 2400, first.size  # 4 across, 6 down
    assert second.height < first.height / 3, "the second page holds one panel"


def test_an_empty_repository_draws_a_picture_that_says_so():
    [image] = render([], "Backups of local:/srv/empty", now=NOW)
    assert png(image).size[0] >= 600
    [svg] = render([], "Backups of local:/srv/empty", "svg", now=NOW)
    assert b"<!-- no backups to draw: the repository holds none in this window -->" in svg  # matplotlib's comment


def test_a_target_with_one_backup_draws_and_reads():
    one = history("solo")
    [image] = render([one], "solo", now=NOW)
    width, height = png(image).size
    assert 600 <= width <= 1000 and 300 <= height <= 600, (width, height)
    assert panel_caption(one) == "1 backup, newest 2.0 MB in 2.0 s"


def test_the_caption_names_the_last_drill_its_rto_and_the_failures():
    drills = (
        Mark(NOW - timedelta(days=2), "drill", True, "x", 12.5, 900.0),
        Mark(NOW - timedelta(days=1), "drill", False, "y", 75.2, 60.0),
    )
    failures = (Mark(NOW - timedelta(hours=3), BACKUP_RUN, False), Mark(NOW - timedelta(hours=2), "verify", False))
    target = history("prod", backups=3, drills=drills, failures=failures)
    caption = panel_caption(target)
    assert (
        caption == "3 backups, newest 40.0 kB in 0.04 s; last drill FAILED, restore 1 min 15 s / 1 min 00 s; 2 failures"
    )
    assert wrap_caption(caption, 50).splitlines() == caption.split("; "), "lines break between parts only"
    assert wrap_caption(caption, 500) == caption
    [svg] = render([target], "prod", "svg", now=NOW)
    for gid in ("drill|passed", "drill|failed", "failure|backup-run-failed", "failure|check-failed"):
        assert f'id="postgres/prod|{gid}"'.encode() in svg, gid


def test_an_old_drill_without_a_restore_time_still_draws():
    target = history("old", backups=2, drills=(Mark(NOW - timedelta(hours=5), "drill", True, "x"),))
    assert "last drill ok" in panel_caption(target) and "restore" not in panel_caption(target)
    [svg] = render([target], "old", "svg", now=NOW)
    assert b'id="postgres/old|drill|passed-untimed"' in svg


@pytest.mark.parametrize(("name", "fmt"), [("a.png", "png"), ("a.PNG", "png"), ("a.svg", "svg"), ("chart", "png")])
def test_png_or_svg_by_the_name(name, fmt):
    assert chart_format(name) == fmt


def test_another_suffix_is_refused():
    with pytest.raises(ConfigError, match=r"status\.jpg: name it \.png or \.svg"):
        chart_format("status.jpg")


def test_axis_units_are_round():
    assert axis_unit([3_000, 250_000], "stored") == (1e3, "kB")
    assert axis_unit([2.5e9], "stored") == (1e9, "GB")
    assert axis_unit([0.4, 30], "duration") == (1.0, "s")
    assert axis_unit([30, 600], "duration") == (60.0, "min")
    assert axis_unit([9000], "duration") == (3600.0, "h")


def test_without_matplotlib_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what importing an absent package does
    with pytest.raises(ChartUnavailableError, match=INSTALL_HINT.replace("[", r"\[").replace("]", r"\]")):
        require_matplotlib()
    with pytest.raises(ChartUnavailableError):
        render([history("x")], "x", now=NOW)


def test_no_time_span_makes_matplotlib_warn_about_its_tick_interval():
    """Spans from two minutes to ten years (5% apart) each get ticks without matplotlib's
    "AutoDateLocator was unable to pick an appropriate interval" (the stock intervals miss 23
    of them at 3 to 6 ticks, 151 s among them)."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vaultflow.chart import time_locator

    now = datetime(2026, 11, 30, tzinfo=UTC)
    spans = sorted({int(1.05**k) + 120 for k in range(400) if 1.05**k < 10 * 365 * 86400})
    warned = []
    for seconds in spans:
        fig, ax = plt.subplots()
        try:
            ax.set_xlim(now - timedelta(seconds=seconds), now)
            locator = time_locator()
            ax.xaxis.set_major_locator(locator)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                ticks = locator()
            if caught:
                warned.append(seconds)
            assert len(ticks) >= 2, seconds
        finally:
            plt.close(fig)
    assert warned == [], f"matplotlib warned for spans of {warned[:5]} s"
