"""latest.png: wall times of the backup and restore contenders, sizes, and RSS over time."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

MB = 1e6
COLORS = {"pg": "#9e9e9e", "floor": "#5c6bc0", "vf": "#26a69a", "flow": "#ffa726"}


def _bars(ax, labels, values, colors, title, unit, fmt="{:.1f}"):
    bars = ax.barh(labels, values, color=colors)
    ax.invert_yaxis()
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(unit, fontsize=8)
    ax.tick_params(labelsize=8)
    top = max(values) if values else 1
    for bar, value in zip(bars, values, strict=False):
        ax.text(
            bar.get_width() + top * 0.01, bar.get_y() + bar.get_height() / 2, fmt.format(value), va="center", fontsize=7
        )
    ax.set_xlim(0, top * 1.18)


def _item_bars(ax, items: list[tuple[str, float, str]], title: str) -> None:
    """_bars of (label, seconds, color key) items."""
    _bars(ax, [i[0] for i in items], [i[1] for i in items], [COLORS[i[2]] for i in items], title, "seconds")


def _value(targets: dict, name: str) -> str:
    v = targets.get(name, {}).get("value")
    return "n/a" if v is None else f"{v:.2f}"


def _rss_panel(ax, title: str, curves: list[tuple[str, list]], notes: list[str]) -> None:
    """RSS curves (label, [[seconds, MB], ...]) against the 300 MB target, with notes as text."""
    for label, series in curves:
        if series:
            ax.plot([q[0] for q in series], [q[1] for q in series], label=label)
    ax.axhline(300, color="#e53935", linestyle="--", linewidth=1, label="target 300 MB")
    ax.text(0.02, 0.62, "\n".join(notes), transform=ax.transAxes, va="top", fontsize=7)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("seconds", fontsize=8)
    ax.set_ylabel("MB", fontsize=8)
    top = max((q[1] for _, series in curves for q in series), default=0)
    ax.set_ylim(0, max(420, top * 1.15))
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=7, loc="upper right")


def _physical(ax_t, ax_lag, p: dict) -> None:
    b, r, w = p["backup"], p["restore"], p["wal"]
    items = [
        ("pg_basebackup | zstd -3 -T0", b["basebackup_zstd"]["seconds"], "floor"),
        ("vaultflow physical full", b["vaultflow_full"]["seconds"], "vf"),
        ("vaultflow incremental (1%)", b["vaultflow_incremental"]["seconds"], "vf"),
        *[
            (f"{label}, row fingerprints", b[key]["seconds"], "pg")
            for label, key in (
                ("full", "vaultflow_full_with_fingerprints"),
                ("incremental", "vaultflow_incremental_with_fingerprints"),
            )
            if key in b
        ],
        ("recover(): full, no target", r["full"]["seconds"], "pg"),
        ("recover(): PITR", r["pitr"]["seconds"], "pg"),
    ]
    _bars(
        ax_t,
        [i[0] for i in items],
        [i[1] for i in items],
        [COLORS[i[2]] for i in items],
        f"Physical, cluster {p['database']['cluster_size_mb']:.0f} MiB (wall, best run)",
        "seconds",
    )
    ax_lag.plot([s[0] for s in w["samples"]], [s[1] for s in w["samples"]], label="segments in spool (not shipped)")
    ax_lag.plot([s[0] for s in w["samples"]], [s[3] for s in w["samples"]], label=".ready (not yet pushed)")
    ax_lag.axhline(3, color="#e53935", linestyle="--", linewidth=1, label="target 3")
    ax_lag.axvline(w["pgbench_seconds"], color="#9e9e9e", linestyle=":", linewidth=1, label="pgbench ends")
    ax_lag.set_title(f"WAL archive lag during pgbench ({w['tps']} tps, {w['segments_archived']} segments)", fontsize=10)
    ax_lag.set_xlabel("seconds", fontsize=8)
    ax_lag.tick_params(labelsize=8)
    ax_lag.legend(fontsize=7, loc="upper right")


def _redis(ax_t, ax_m, d: dict) -> None:
    b, r, t = d["backup"], d["restore"], d["targets"]
    items = [
        ("redis-cli --rdb - | zstd -3 -T0", b["stock"]["seconds"], "floor"),
        ("vaultflow full (remote)", b["vaultflow"]["seconds"], "vf"),
        ("plain redis-server load", r["plain_load"]["seconds"], "floor"),
        ("vaultflow drill", r["vaultflow_drill"]["seconds"], "vf"),
    ]
    aof = d.get("aof") or {}
    if "full" in aof:
        items += [
            ("AOF full (local)", aof["full"]["seconds"], "pg"),
            ("AOF incremental (1% keys)", aof["incremental"]["seconds"], "pg"),
        ]

    ds = d["dataset"]
    _item_bars(
        ax_t,
        items,
        f"Redis, {ds['keys'] / 1e6:.2f}M keys, {ds['value_bytes'] / 1e6:.0f} MB values (median wall)\n"
        f"remote full x{_value(t, 'remote_full_vs_stock')} (<= 1.2), "
        f"drill x{_value(t, 'drill_vs_plain_load')} (<= 1.5)",
    )
    curves = [
        (
            f"{label}: {run['dataset']['value_bytes'] / 1e6:.0f} MB values, peak {run['peak_rss_kernel_mb']:.0f} MB "
            f"(redis-check-rdb {run.get('children_peak_rss_mb', {}).get('redis-check-rdb', 0):.0f} MB)",
            run.get("series_mb") or [],
        )
        for label, run in d.get("memory", {}).items()
    ]
    sizes = [f"stock .zst {b['stock']['size'] / 1e6:.0f} MB, vaultflow {b['vaultflow']['size'] / 1e6:.0f} MB"]
    if "full" in aof:
        sizes.append(
            f"AOF full {aof['full']['stored_size'] / 1e6:.0f} MB, incremental "
            f"{aof['incremental']['stored_size'] / 1e6:.2f} MB (x{t['aof_incremental_size_vs_full']['value']:.4f}, <= 0.05)"
        )
    _rss_panel(ax_m, "Redis: RSS of the backup process (Python only)", curves, sizes)


def _mongo(ax_t, ax_m, d: dict) -> None:
    b, t = d["backup"], d["targets"]
    p, a = d.get("point_in_time") or {}, d.get("archive") or {}
    p, a = ({} if "error" in p else p), ({} if "error" in a else a)
    items = [
        ("pymongo raw batches | zstd -3 -T0", b["floor"]["seconds"], "floor"),
        ("vaultflow full (MongoEngine)", b["vaultflow"]["seconds"], "vf"),
    ]
    if p:
        items += [
            ("restore of the full (verify + compare)", p["restore_seconds"], "pg"),
            (f"replay {p['entries']} oplog entries", p["replay_seconds"], "pg"),
        ]

    ds = d["dataset"]
    _item_bars(
        ax_t,
        items,
        f"MongoDB (SecantusDB), {ds['bson_mb']:.0f} MB BSON, {ds['documents'] / 1e6:.2f}M docs (wall, best)\n"
        f"full x{_value(t, 'full_backup_vs_floor')} of floor (<= 1.3); archive lag "
        f"{_value(t, 'archive_lag_seconds')} s ({t['archive_lag_seconds']['target']})",
    )
    curves = [
        (f"{label}: {run['bson_mb']:.0f} MB, peak {run['peak_rss_kernel_mb']:.0f} MB", run.get("series_mb") or [])
        for label, run in d.get("memory", {}).items()
        if label != "error"
    ]
    notes = []
    if a:
        notes.append(
            f"writer {a['writer']['entries_per_second']:.0f} ops/s for {a['writer']['seconds']:.0f} s; "
            f"{a['slices']} slices of {a['slice_seconds']} s; max lag {a['max_lag_seconds']} s"
        )
    if p:
        notes.append(f"replay {p['entries_per_second']} entries/s; restore {p['restore_seconds']:.0f} s")
    _rss_panel(ax_m, "\n".join(["MongoDB: RSS of the backup process (Python only)", *notes]), curves, [])


def _clickhouse(ax_t, ax_m, d: dict) -> None:
    b, r, t, inc = d["backup"], d["restore"], d["targets"], d["incremental"]
    items = [
        ("native BACKUP ... TO Disk", b["native"]["seconds"], "pg"),
        ("BACKUP + tar | zstd -3 -T0 (floor)", b["floor"]["seconds"], "floor"),
        ("vaultflow full", b["vaultflow"]["seconds"], "vf"),
        ("vaultflow incremental (+1% rows)", inc["seconds"], "vf"),
        ("native RESTORE", r["native"]["seconds"], "pg"),
        ("zstd -d | tar -x + RESTORE (floor)", r["floor"]["seconds"], "floor"),
        ("vaultflow restore (checked, compared)", r["vaultflow"]["seconds"], "vf"),
    ]
    ds = d["dataset"]
    _item_bars(
        ax_t,
        items,
        f"ClickHouse (chDB), TPC-H SF {ds['scale']}, {ds['bytes_on_disk'] / 1e6:.0f} MB on disk (wall, best)\n"
        f"full x{_value(t, 'full_backup_vs_native')} of native (<= 1.3), "
        f"x{d['floor_ratios']['full_backup_vs_floor']:.2f} of floor; restore x{_value(t, 'restore_vs_native')} "
        f"(<= 1.3), x{d['floor_ratios']['restore_vs_floor']:.2f} of floor",
    )
    mem = d["memory"]
    notes = [
        f"{name}: peak {p['peak_rss_mb']} MB (anonymous {p['peak_rss_anon_mb']}, file-backed "
        f"{p['peak_rss_file_mb']}), chDB tracked {p['chdb_memory_tracking_mb']} MB"
        for name, p in mem["phases"].items()
    ]
    notes.append(
        f"full {b['vaultflow']['size'] / 1e6:.0f} MB stored, incremental {inc['stored_size'] / 1e6:.2f} MB "
        f"(x{t['incremental_size_vs_full']['value']:.4f}, <= 0.05)"
    )
    curves = [(f"worker (chDB inside), peak {mem['peak_rss_kernel_mb']:.0f} MB", mem.get("series_mb") or [])]
    alone = d.get("memory_without_chdb") or {}
    if alone:
        curves.append(
            (f"same file work without chDB, peak {alone['peak_rss_kernel_mb']:.0f} MB", alone.get("series_mb") or [])
        )
    _rss_panel(ax_m, "ClickHouse: RSS of the worker process (backup, then restore)", curves, notes)


def render(doc: dict, path: Path) -> None:
    logical, has_phys, has_redis, has_mongo = "backup" in doc, "physical" in doc, "redis" in doc, "mongo" in doc
    has_ch = "clickhouse" in doc
    rows = 2 * logical + has_phys + has_redis + has_mongo + has_ch
    fig, axes = plt.subplots(rows, 2, figsize=(12, 3.5 * rows), dpi=72, squeeze=False)
    row = 2 * logical
    if has_phys:
        _physical(axes[row][0], axes[row][1], doc["physical"])
        row += 1
    if has_redis:
        _redis(axes[row][0], axes[row][1], doc["redis"])
        row += 1
    if has_mongo:
        _mongo(axes[row][0], axes[row][1], doc["mongo"])
        row += 1
    if has_ch:
        _clickhouse(axes[row][0], axes[row][1], doc["clickhouse"])
    if logical:
        _logical(doc, axes)
    fig.suptitle(f"vaultflow bench {doc['started_at']}  ({doc['machine']['cpus']} cores)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _logical(doc: dict, axes) -> None:
    b, r = doc["backup"], doc["restore"]
    names = [
        ("pg_dump -Fc (gzip)", "pg_dump_fc", "pg"),
        ("pg_dump -Z0 | zstd -3 -T0", "raw_floor", "floor"),
        ("vaultflow core -> local", "vaultflow_local", "vf"),
        ("vaultflow core -> S3", "vaultflow_s3", "vf"),
    ]
    labels = [n for n, key, _ in names if key in b]
    values = [b[key]["seconds"] for _, key, _ in names if key in b]
    colors = [COLORS[c] for _, key, c in names if key in b]
    flow = doc.get("flow", {})
    if flow.get("big_flow_seconds_min"):
        labels.append("vaultflow Prefect flow -> local")
        values.append(flow["big_flow_seconds_min"])
        colors.append(COLORS["flow"])
    _bars(
        axes[0][0],
        labels,
        values,
        colors,
        f"Full backup of {doc['database']['size_mb']:.0f} MiB (wall, best run; lower is better)",
        "seconds",
    )

    restore_names = [
        ("pg_restore (uncompressed dump)", "pg_restore_uncompressed", "pg"),
        ("vaultflow restore (verify + compare)", "vaultflow_restore", "vf"),
        ("fingerprint, fresh copy (alone)", "fingerprint_fresh_restore", "floor"),
        ("fingerprint, source db (alone)", "fingerprint", "floor"),
    ]
    _bars(
        axes[0][1],
        [n for n, k, _ in restore_names if k in r],
        [r[k]["seconds"] for _, k, _ in restore_names if k in r],
        [COLORS[c] for _, k, c in restore_names if k in r],
        "Restore (wall, best run)",
        "seconds",
    )

    sizes = doc["sizes"]
    size_names = [
        ("database (pg_database_size)", "database", "pg"),
        ("pg_dump -Z0 (raw)", "dump_uncompressed", "pg"),
        ("pg_dump -Fc (gzip)", "pg_dump_fc", "pg"),
        ("raw floor (zstd -3)", "raw_floor", "floor"),
        ("vaultflow stored", "vaultflow_stored", "vf"),
    ]
    _bars(
        axes[1][0],
        [n for n, k, _ in size_names if k in sizes],
        [sizes[k] / MB for _, k, _ in size_names if k in sizes],
        [COLORS[c] for _, k, c in size_names if k in sizes],
        "Sizes",
        "MB",
        fmt="{:.0f}",
    )

    ax = axes[1][1]
    for label, run in doc.get("memory", {}).items():
        series = run.get("series_mb") or []
        if series:
            ax.plot(
                [p[0] for p in series],
                [p[1] for p in series],
                label=f"{label}: {run['database_size_mb']:.0f} MiB db, peak {run['peak_rss_kernel_mb']:.0f} MB",
            )
    ax.axhline(300, color="#e53935", linestyle="--", linewidth=1, label="target 300 MB")
    ax.set_title("RSS of the backup process (Python only)", fontsize=10)
    ax.set_xlabel("seconds", fontsize=8)
    ax.set_ylabel("MB", fontsize=8)
    ax.set_ylim(bottom=0)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=7, loc="lower right")
