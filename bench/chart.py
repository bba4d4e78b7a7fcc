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
    for bar, value in zip(bars, values):
        ax.text(bar.get_width() + top * 0.01, bar.get_y() + bar.get_height() / 2, fmt.format(value),
                va="center", fontsize=7)
    ax.set_xlim(0, top * 1.18)


def render(doc: dict, path: Path) -> None:
    b, r = doc["backup"], doc["restore"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 7), dpi=72)
    names = [("pg_dump -Fc (gzip)", "pg_dump_fc", "pg"), ("pg_dump -Z0 | zstd -3 -T0", "raw_floor", "floor"),
             ("vaultflow core -> local", "vaultflow_local", "vf"), ("vaultflow core -> S3", "vaultflow_s3", "vf")]
    labels = [n for n, key, _ in names if key in b]
    values = [b[key]["seconds"] for _, key, _ in names if key in b]
    colors = [COLORS[c] for _, key, c in names if key in b]
    flow = doc.get("flow", {})
    if flow.get("big_flow_seconds_min"):
        labels.append("vaultflow Prefect flow -> local")
        values.append(flow["big_flow_seconds_min"])
        colors.append(COLORS["flow"])
    _bars(axes[0][0], labels, values, colors, f"Full backup of {doc['database']['size_mb']:.0f} MiB "
          "(wall, best run; lower is better)", "seconds")

    restore_names = [("pg_restore (uncompressed dump)", "pg_restore_uncompressed", "pg"),
                     ("vaultflow restore (verify + compare)", "vaultflow_restore", "vf"),
                     ("fingerprint, fresh copy (alone)", "fingerprint_fresh_restore", "floor"),
                     ("fingerprint, source db (alone)", "fingerprint", "floor")]
    _bars(axes[0][1], [n for n, k, _ in restore_names if k in r], [r[k]["seconds"] for _, k, _ in restore_names if k in r],
          [COLORS[c] for _, k, c in restore_names if k in r], "Restore (wall, best run)", "seconds")

    sizes = doc["sizes"]
    size_names = [("database (pg_database_size)", "database", "pg"), ("pg_dump -Z0 (raw)", "dump_uncompressed", "pg"),
                  ("pg_dump -Fc (gzip)", "pg_dump_fc", "pg"), ("raw floor (zstd -3)", "raw_floor", "floor"),
                  ("vaultflow stored", "vaultflow_stored", "vf")]
    _bars(axes[1][0], [n for n, k, _ in size_names if k in sizes], [sizes[k] / MB for _, k, _ in size_names if k in sizes],
          [COLORS[c] for _, k, c in size_names if k in sizes], "Sizes", "MB", fmt="{:.0f}")

    ax = axes[1][1]
    for label, run in doc.get("memory", {}).items():
        series = run.get("series_mb") or []
        if series:
            ax.plot([p[0] for p in series], [p[1] for p in series],
                    label=f"{label}: {run['database_size_mb']:.0f} MiB db, peak {run['peak_rss_kernel_mb']:.0f} MB")
    ax.axhline(300, color="#e53935", linestyle="--", linewidth=1, label="target 300 MB")
    ax.set_title("RSS of the backup process (Python only)", fontsize=10)
    ax.set_xlabel("seconds", fontsize=8)
    ax.set_ylabel("MB", fontsize=8)
    ax.set_ylim(bottom=0)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=7, loc="lower right")

    fig.suptitle(f"vaultflow bench {doc['started_at']}  ({doc['machine']['cpus']} cores)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
