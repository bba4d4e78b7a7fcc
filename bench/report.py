"""The ratios the project is judged on (with pass/fail) and the summary table."""

from __future__ import annotations

MB = 1e6

# name -> (numerator, denominator, target, what it means); numerator/denominator are paths in the doc
TARGETS = {
    "backup_time_vs_pg_dump_fc": (
        "backup.vaultflow_local.seconds",
        "backup.pg_dump_fc.seconds",
        0.5,
        "vaultflow core (local) wall / pg_dump -Fc wall",
    ),
    "backup_time_vs_raw_floor": (
        "backup.vaultflow_local.seconds",
        "backup.raw_floor.seconds",
        1.15,
        "vaultflow core (local) wall / pg_dump -Z0 | zstd -3 -T0 wall",
    ),
    "stored_size_vs_pg_dump_fc": (
        "sizes.vaultflow_stored",
        "sizes.pg_dump_fc",
        0.75,
        "vaultflow stored bytes / pg_dump -Fc file bytes",
    ),
    "s3_time_vs_local": (
        "backup.vaultflow_s3.seconds",
        "backup.vaultflow_local.seconds",
        1.3,
        "vaultflow core to S3 wall / to local wall",
    ),
    "restore_time_vs_pg_restore": (
        "restore.vaultflow_restore.seconds",
        "restore.pg_restore_uncompressed.seconds",
        1.15,
        "vaultflow restore wall / pg_restore (uncompressed dump) wall",
    ),
}
RSS_LIMIT_MB = 300
RSS_FLAT = 1.10  # the big database's peak may exceed the small one's by at most 10%


def judged(values: dict, limits: dict[str, tuple[float, str]]) -> dict:
    """{name: {value, target, pass, meaning}} for `values` against `limits` (name -> (limit,
    meaning)); every target is value <= limit, and a missing value (None) fails."""
    return {
        k: {
            "value": None if v is None else round(v, 4),
            "target": f"<= {limits[k][0]:g}",
            "pass": v is not None and v <= limits[k][0],
            "meaning": limits[k][1],
        }
        for k, v in values.items()
    }


def target_lines(targets: dict) -> list[str]:
    """One summary line per judged target: name, value, target, PASS or FAIL."""
    lines = []
    for name, t in targets.items():
        value = "n/a" if t["value"] is None else f"{t['value']:.3f}"
        lines.append(f"  {name:<45}{value:>9}  {t['target']:>8}   {'PASS' if t['pass'] else 'FAIL'}")
    return lines


def _get(doc: dict, path: str):
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc


def compute_ratios(doc: dict) -> dict:
    ratios: dict[str, dict] = {}
    for name, (num, den, target, meaning) in TARGETS.items():
        a, b = _get(doc, num), _get(doc, den)
        value = round(a / b, 3) if a is not None and b else None
        ratios[name] = {
            "value": value,
            "target": f"<= {target}",
            "pass": value is not None and value <= target,
            "meaning": meaning,
        }
    memory = doc.get("memory", {})
    for label in ("small", "big"):
        peak = _get(memory, f"{label}.peak_rss_kernel_mb")
        ratios[f"peak_rss_{label}_mb"] = {
            "value": peak,
            "target": f"<= {RSS_LIMIT_MB}",
            "pass": peak is not None and peak <= RSS_LIMIT_MB,
            "meaning": f"peak RSS (MB) of the Python backup process, {label} database",
        }
    small, big = _get(memory, "small.peak_rss_kernel_mb"), _get(memory, "big.peak_rss_kernel_mb")
    growth = round(big / small, 3) if small and big else None
    ratios["peak_rss_growth"] = {
        "value": growth,
        "target": f"<= {RSS_FLAT}",
        "pass": growth is not None and growth <= RSS_FLAT,
        "meaning": "peak RSS big database / small database (memory must not grow with size)",
    }
    return ratios


def _row(label: str, seconds=None, size=None, note: str = "") -> str:
    sec = f"{seconds:8.2f} s" if seconds is not None else " " * 10
    siz = f"{size / MB:9.1f} MB" if size is not None else " " * 12
    return f"  {label:<44}{sec}  {siz}  {note}"


def _cpu(run: dict) -> str:
    s3 = run.get("cpu_s3_server_s") or 0.0
    servers = f"{run['cpu_servers_s']:.1f}" + (f" (s3 {s3:.1f})" if s3 >= 0.05 else "")
    return f"{run['cpu_self_s']:.1f} / {run['cpu_children_s']:.1f} / {servers} / {run['cpu_others_s']:.1f}"


def summary(doc: dict) -> str:
    from bench.clickhouse_report import summary_lines as clickhouse_lines
    from bench.mongo import summary_lines as mongo_lines
    from bench.physical import summary_lines
    from bench.redis import summary_lines as redis_lines

    tail = [*summary_lines(doc["physical"])] if "physical" in doc else []
    tail += [*redis_lines(doc["redis"])] if "redis" in doc else []
    tail += [*mongo_lines(doc["mongo"])] if "mongo" in doc else []
    tail += [*clickhouse_lines(doc["clickhouse"])] if "clickhouse" in doc else []
    tail += [
        "",
        f"  total bench time {doc['total_seconds']:.0f} s; all targets pass: {doc.get('all_pass')}; "
        f"results in {doc.get('json_path', '?')}",
        "",
    ]
    if "backup" not in doc:  # --physical-only
        return "\n".join(tail)
    b, r, d = doc["backup"], doc["restore"], doc.get("diagnostics", {})
    db = doc["database"]
    lines = [
        "",
        f"vaultflow bench  {doc['started_at']}  ({doc['machine']['cpus']} cores, PostgreSQL {doc['machine']['postgres']})",
        (
            f"database {db['name']}: {db['size_mb']:.0f} MiB in {len(db['rows'])} tables "
            f"(generated in {db['generation_seconds']:.1f} s); small: {doc['small_database']['size_mb']:.0f} MiB "
            f"({doc['small_database']['generation_seconds']:.1f} s)"
        ),
        (
            f"load average at start {doc.get('load_avg_at_start')}; 'others' = CPU used by other processes "
            "during the run (noise)"
        ),
        "",
        "  BACKUP (best of runs)                         wall         size   cpu-s: bench / children / servers / others",
    ]
    mb = doc["sizes"]["database"]
    for label, key in [
        ("pg_dump -Fc (gzip, seed)", "pg_dump_fc"),
        ("raw floor: pg_dump -Z0 | zstd -3 -T0", "raw_floor"),
        ("vaultflow core -> LocalStore", "vaultflow_local"),
        ("vaultflow core -> S3Store (SeaweedFS)", "vaultflow_s3"),
    ]:
        if key in b:
            run = b[key]
            lines.append(
                _row(
                    label,
                    run["seconds"],
                    run["size"],
                    f"{_cpu(run)}  ({mb / MB / run['seconds']:.0f} MB/s of db; runs {run['all_seconds']})",
                )
            )
    flow = doc.get("flow", {})
    if flow.get("big_flow_seconds_min") is not None:
        lines.append(
            _row(
                "vaultflow Prefect flow -> local",
                flow["big_flow_seconds_min"],
                None,
                f"fixed cost vs core: {flow['fixed_cost_big_s']:+.2f} s",
            )
        )
        lines.append(
            _row(
                "  flow on tiny db (warm) / core on tiny db",
                flow["tiny_warm_seconds_min"],
                None,
                f"core {flow['tiny_core_seconds_min']:.2f} s -> fixed cost {flow['fixed_cost_tiny_s']:.2f} s",
            )
        )
        lines.append(
            f"  {'':<44}first flow run in a process {flow['tiny_cold_seconds']:.2f} s, after ephemeral API start "
            f"{flow['api_start_seconds']:.2f} s and import {flow['import_seconds']:.2f} s"
        )
    lines += ["", "  RESTORE (best of runs)"]
    for label, key in [
        ("pg_dump -Fc -Z0 -f (restore input)", "dump_uncompressed"),
        ("CREATE DATABASE + pg_restore (1 job)", "pg_restore_uncompressed"),
        ("vaultflow engine.restore", "vaultflow_restore"),
        ("fingerprint of source db (alone)", "fingerprint"),
        ("fingerprint of freshly restored db", "fingerprint_fresh_restore"),
    ]:
        if key in r:
            lines.append(
                _row(label, r[key]["seconds"], r[key].get("size"), f"{_cpu(r[key])}  (runs {r[key]['all_seconds']})")
            )
    if d:
        lines += [
            "",
            "  DIAGNOSTICS (one run each)                                          cpu-s: bench / children / servers / others",
        ]
        labels = {
            "pg_dump_devnull": "pg_dump -Z0 | cat > /dev/null",
            "vaultflow_local_no_fingerprint": "vaultflow core, fingerprints disabled",
            "local_put_alone": "LocalStore.put of the stored dump",
            "s3_put_alone": "S3Store.put of the stored dump",
            "s3_put_alone_no_checksum": "S3Store.put, checksum_algorithm=None",
        }
        for key, run in d.items():
            label = labels.get(key) or f"{key} -T0 over the -Z0 dump"
            ratio = f"x{run['size'] / doc['sizes']['pg_dump_fc']:.3f} of -Fc" if key.startswith("zstd") else ""
            lines.append(_row(label, run["seconds"], run.get("size"), f"{_cpu(run)}  {ratio}"))
    memory = doc.get("memory", {})
    if memory:
        lines += ["", "  MEMORY (Python backup process, sampled every 50 ms; kernel high-water mark)"]
        for label, run in memory.items():
            kids = ", ".join(f"{k} {v:.0f} MB" for k, v in run["children_peak_rss_mb"].items())
            lines.append(
                f"  {label:<6} {run['database_size_mb']:6.0f} MiB db: peak {run['peak_rss_kernel_mb']:.0f} MB "
                f"(sampled {run['peak_rss_sampled_mb']:.0f}, after imports {run['rss_after_imports_mb']:.0f}); "
                f"children: {kids or 'n/a'}"
            )
    lines += ["", "  RATIOS                                           value   target   result"]
    for name, ratio in doc["ratios"].items():
        value = "n/a" if ratio["value"] is None else f"{ratio['value']:.3f}"
        lines.append(f"  {name:<45}{value:>9}  {ratio['target']:>8}   {'PASS' if ratio['pass'] else 'FAIL'}")
    return "\n".join(lines + tail)
