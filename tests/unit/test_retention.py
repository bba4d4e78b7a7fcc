"""The retention planner: GFS rules, chain awareness, safety, and properties over random sets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from vaultflow.engines.redis.consistency import RedisAofConsistency
from vaultflow.errors import RefusedError
from vaultflow.manifest import BackupKind, BackupMode, Manifest, new_backup_id
from vaultflow.retention import (
    DEFAULT_CLOCK_TOLERANCE,
    KEEPS_NOTHING,
    BackupRef,
    Decision,
    RetentionPolicy,
    clock_problems,
    parse_duration,
    plan,
    summarize,
)

F, I, D = BackupKind.FULL, BackupKind.INCREMENTAL, BackupKind.DIFFERENTIAL
UTC = UTC
T0 = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)


def ref(when: datetime, kind: BackupKind = F, parent: BackupRef | str | None = None) -> BackupRef:
    parent_id = parent.id if isinstance(parent, BackupRef) else parent
    return BackupRef(new_backup_id(kind, when), kind, parent_id, when)


def fulls(start: datetime, count: int, step: timedelta) -> list[BackupRef]:
    return [ref(start + i * step) for i in range(count)]


def kept_ids(decisions: dict[str, Decision]) -> list[str]:
    return summarize(decisions)[0]


# --- policy validation and duration parsing -------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"keep_last": 0}, {"keep_daily": 0, "keep_weekly": None}, {"keep_within": "0d"}, {"keep_within": 0}],
)
def test_policy_that_keeps_nothing_is_refused_with_the_message(kwargs: dict) -> None:
    with pytest.raises(ValidationError, match="retention policy keeps nothing; set at least one of keep_last"):
        RetentionPolicy(**kwargs)


def test_plan_refuses_a_keep_nothing_policy_built_without_validation() -> None:
    with pytest.raises(RefusedError, match="keeps nothing"):
        plan([ref(T0)], RetentionPolicy.model_construct(), T0)
    assert "keep_daily" in KEEPS_NOTHING


@pytest.mark.parametrize(
    "kwargs",
    [
        {"keep_last": -1},
        {"keep_daily": -3},
        {"keep_last": 1, "keep_within": "-1d"},
        {"keep_last": 1, "orphan_grace": timedelta(hours=-1)},
        {"keep_last": 1, "keep_forever": True},
    ],
)
def test_invalid_policies_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ValidationError):
        RetentionPolicy(**kwargs)


def test_policy_is_frozen() -> None:
    policy = RetentionPolicy(keep_last=1)
    with pytest.raises(ValidationError):
        policy.keep_last = 0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", timedelta(days=7)),
        ("36h", timedelta(hours=36)),
        ("2w", timedelta(days=14)),
        ("1y", timedelta(days=365)),
        ("1m", timedelta(days=30)),
        ("90min", timedelta(minutes=90)),
        ("1d12h", timedelta(hours=36)),
        (" 7D ", timedelta(days=7)),
        ("3600", timedelta(hours=1)),
        (86400, timedelta(days=1)),
        (timedelta(hours=5), timedelta(hours=5)),
        ("P7D", timedelta(days=7)),  # ISO 8601, parsed by pydantic
    ],
)
def test_durations_parse_in_policies(text: object, expected: timedelta) -> None:
    policy = RetentionPolicy(keep_within=text, orphan_grace=text)
    assert policy.keep_within == expected
    assert policy.orphan_grace == expected


def test_bad_duration_says_what_to_write() -> None:
    with pytest.raises(ValueError, match="'7x' is not a duration; write e.g. '7d'"):
        parse_duration("7x")
    with pytest.raises(ValidationError, match="is not a duration"):
        RetentionPolicy(keep_within="seven days")


def test_orphan_grace_defaults_to_a_day() -> None:
    assert RetentionPolicy(keep_last=1).orphan_grace == timedelta(hours=24)


# --- rules ------------------------------------------------------------------------------


def test_keep_last() -> None:
    backups = fulls(T0, 5, timedelta(days=1))
    decisions = plan(backups, RetentionPolicy(keep_last=3), T0 + timedelta(days=10))
    assert kept_ids(decisions) == sorted(b.id for b in backups[-3:])
    assert decisions[backups[-1].id].reasons == ("newest restorable backup", "last 3")
    assert decisions[backups[-3].id].reasons == ("last 3",)
    assert decisions[backups[0].id] == Decision(False, ("no rule keeps it",))


def test_keep_hourly_picks_the_newest_of_each_hour() -> None:
    backups = fulls(T0, 12, timedelta(minutes=20))  # 4 hours, 3 backups each
    decisions = plan(backups, RetentionPolicy(keep_hourly=2), T0 + timedelta(hours=5))
    assert kept_ids(decisions) == sorted([backups[-1].id, backups[-4].id])
    assert "hourly 2026-01-01T04" in decisions[backups[-4].id].reasons


def test_keep_daily_over_a_month_of_daily_backups() -> None:
    backups = fulls(T0, 31, timedelta(days=1))
    decisions = plan(backups, RetentionPolicy(keep_daily=7), T0 + timedelta(days=31))
    assert kept_ids(decisions) == sorted(b.id for b in backups[-7:])
    assert "daily 2026-01-25" in decisions[backups[24].id].reasons


def test_keep_daily_counts_days_that_have_backups_and_keeps_their_newest() -> None:
    # Three backups a day on days 0, 1, 5 and 6; the gap days do not use up the count.
    days = [0, 1, 5, 6]
    backups = [ref(T0 + timedelta(days=d, hours=h)) for d in days for h in (0, 6, 12)]
    decisions = plan(backups, RetentionPolicy(keep_daily=3), T0 + timedelta(days=30))
    newest_of = {d: ref(T0 + timedelta(days=d, hours=12)).id for d in days}
    assert kept_ids(decisions) == sorted(newest_of[d] for d in (1, 5, 6))
    assert decisions[newest_of[1]].reasons == ("daily 2026-01-02",)


def test_keep_weekly_uses_iso_weeks() -> None:
    backups = fulls(datetime(2026, 1, 5, 2, tzinfo=UTC), 70, timedelta(days=1))  # Mon 5 Jan, 10 weeks
    decisions = plan(backups, RetentionPolicy(keep_weekly=4), backups[-1].finished_at)
    kept = [b for b in backups if decisions[b.id].keep]
    assert len(kept) == 4
    assert all(b.finished_at.isoweekday() == 7 for b in kept)  # newest of a Mon..Sun week
    assert decisions[kept[0].id].reasons == ("weekly 2026-W08",)


def test_weekly_iso_week_spans_the_new_year() -> None:
    # Wed 31 Dec 2025 and Thu 1 Jan 2026 are both in ISO week 2026-W01.
    backups = [ref(datetime(2025, 12, d, tzinfo=UTC)) for d in (26, 31)] + [ref(datetime(2026, 1, 1, tzinfo=UTC))]
    decisions = plan(backups, RetentionPolicy(keep_weekly=2), datetime(2026, 1, 2, tzinfo=UTC))
    assert [decisions[b.id].reasons for b in backups] == [
        ("weekly 2025-W52",),
        ("no rule keeps it",),
        ("newest restorable backup", "weekly 2026-W01"),
    ]


def test_keep_monthly() -> None:
    backups = fulls(T0, 365, timedelta(days=1))  # 2026-01-01 .. 2026-12-31
    decisions = plan(backups, RetentionPolicy(keep_monthly=3), T0 + timedelta(days=400))
    kept = [b.finished_at.date().isoformat() for b in backups if decisions[b.id].keep]
    assert kept == ["2026-10-31", "2026-11-30", "2026-12-31"]


def test_keep_yearly() -> None:
    backups = [ref(datetime(y, m, 1, tzinfo=UTC)) for y in (2023, 2024, 2025) for m in range(1, 13)]
    decisions = plan(backups, RetentionPolicy(keep_yearly=2), datetime(2026, 1, 1, tzinfo=UTC))
    kept = [b for b in backups if decisions[b.id].keep]
    assert [b.finished_at.date().isoformat() for b in kept] == ["2024-12-01", "2025-12-01"]
    assert decisions[kept[0].id].reasons == ("yearly 2024",)


def test_keep_within_is_measured_from_now() -> None:
    backups = fulls(T0, 10, timedelta(hours=12))
    now = backups[-1].finished_at + timedelta(hours=12)
    decisions = plan(backups, RetentionPolicy(keep_within="36h"), now)
    # now-12h, now-24h, now-36h (inclusive) are within 36h.
    assert kept_ids(decisions) == sorted(b.id for b in backups[-3:])
    assert decisions[backups[-3].id].reasons == ("within 36h",)


def test_newest_restorable_is_kept_even_when_no_rule_reaches_it() -> None:
    backups = fulls(T0, 3, timedelta(days=1))
    decisions = plan(backups, RetentionPolicy(keep_within="1h"), T0 + timedelta(days=100))
    assert kept_ids(decisions) == [backups[-1].id]
    assert decisions[backups[-1].id].reasons == ("newest restorable backup",)


def test_combined_rules_list_every_reason() -> None:
    backups = fulls(T0, 10, timedelta(hours=12))  # two a day, 5 days
    policy = RetentionPolicy(keep_last=2, keep_daily=3, keep_monthly=1)
    decisions = plan(backups, policy, T0 + timedelta(days=5))
    assert decisions[backups[-1].id].reasons == (
        "newest restorable backup",
        "last 2",
        "daily 2026-01-05",
        "monthly 2026-01",
    )
    assert decisions[backups[-2].id].reasons == ("last 2",)
    assert decisions[backups[-3].id].reasons == ("daily 2026-01-04",)
    assert decisions[backups[-5].id].reasons == ("daily 2026-01-03",)
    assert kept_ids(decisions) == sorted(b.id for b in (backups[-1], backups[-2], backups[-3], backups[-5]))


# --- chains -----------------------------------------------------------------------------


def chain() -> tuple[BackupRef, BackupRef, BackupRef]:
    full = ref(T0)
    i1 = ref(T0 + timedelta(hours=1), I, full)
    i2 = ref(T0 + timedelta(hours=2), I, i1)
    return full, i1, i2


def test_keeping_the_last_incremental_keeps_the_whole_chain() -> None:
    full, i1, i2 = chain()
    old = ref(T0 - timedelta(days=1))
    decisions = plan([old, full, i1, i2], RetentionPolicy(keep_last=1), T0 + timedelta(days=1))
    assert kept_ids(decisions) == sorted([full.id, i1.id, i2.id])
    assert decisions[i2.id].reasons == ("newest restorable backup", "last 1")
    assert decisions[i1.id].reasons == (f"parent of {i2.id}",)
    assert decisions[full.id].reasons == (f"parent of {i1.id}",)
    assert not decisions[old.id].keep


def test_a_differential_keeps_only_its_full() -> None:
    full, i1, i2 = chain()
    diff = ref(T0 + timedelta(hours=3), D, full)
    decisions = plan([full, i1, i2, diff], RetentionPolicy(keep_last=1), T0 + timedelta(days=1))
    assert kept_ids(decisions) == sorted([full.id, diff.id])
    assert decisions[full.id].reasons == (f"parent of {diff.id}",)
    assert decisions[i1.id] == decisions[i2.id] == Decision(False, ("no rule keeps it",))


def test_a_parent_kept_by_a_rule_also_lists_its_children() -> None:
    full, i1, i2 = chain()
    decisions = plan([full, i1, i2], RetentionPolicy(keep_last=3), T0 + timedelta(days=1))
    assert decisions[full.id].reasons == ("last 3", f"parent of {i1.id}")


def test_broken_chains_are_deleted_and_do_not_count_as_restore_points() -> None:
    full, i1, i2 = chain()
    older = ref(T0 - timedelta(days=1))
    # i1's full is gone: i1 and its child i2 cannot be restored.
    decisions = plan([older, i1, i2], RetentionPolicy(keep_last=1), T0 + timedelta(days=1))
    assert decisions[i1.id] == Decision(False, (f"chain broken: parent {full.id} is missing",))
    assert decisions[i2.id] == Decision(False, (f"chain broken: parent {i1.id} is broken",))
    assert decisions[older.id] == Decision(True, ("newest restorable backup", "last 1"))


def test_incremental_without_parent_and_parent_loops_are_broken() -> None:
    orphan = ref(T0, I)
    a_id, b_id = new_backup_id(I, T0 + timedelta(hours=1)), new_backup_id(I, T0 + timedelta(hours=2))
    a = BackupRef(a_id, I, b_id, T0 + timedelta(hours=1))
    b = BackupRef(b_id, I, a_id, T0 + timedelta(hours=2))
    decisions = plan([orphan, a, b], RetentionPolicy(keep_last=5), T0)
    assert kept_ids(decisions) == []
    assert decisions[orphan.id].reasons == ("chain broken: incremental backup has no parent",)
    assert all(decisions[x.id].reasons[0].startswith("chain broken:") for x in (a, b))


def test_empty_input_and_summarize() -> None:
    assert plan([], RetentionPolicy(keep_last=1), T0) == {}
    decisions = {"b": Decision(True, ("x",)), "a": Decision(True, ("y",)), "c": Decision(False, ("z",))}
    assert summarize(decisions) == (["a", "b"], ["c"])


def test_duplicates_and_naive_datetimes() -> None:
    full = ref(T0)
    assert list(plan([full, full], RetentionPolicy(keep_last=1), T0)) == [full.id]
    clash = BackupRef(full.id, F, None, T0 + timedelta(seconds=1))
    with pytest.raises(RefusedError, match="appears twice"):
        plan([full, clash], RetentionPolicy(keep_last=1), T0)
    with pytest.raises(RefusedError, match="timezone"):
        plan([full], RetentionPolicy(keep_last=1), T0.replace(tzinfo=None))
    naive = BackupRef("x", F, None, T0.replace(tzinfo=None))
    with pytest.raises(RefusedError, match="timezone"):
        plan([naive], RetentionPolicy(keep_last=1), T0)


def test_from_manifest() -> None:
    m = Manifest(
        id=new_backup_id(I, T0),
        engine="redis",
        target="demo",
        kind=I,
        parent_id="p",
        mode=BackupMode.AOF,
        consistency=RedisAofConsistency(
            aof_dir="appendonlydir",
            aof_filename="appendonly.aof",
            base="b.rdb",
            base_format="rdb",
            base_size=9,
            base_head_sha256="00",
            incr_files=[],
            cuts={},
            tail_sha256={},
            pieces=[],
        ),
        started_at=T0 - timedelta(minutes=1),
        finished_at=T0,
        objects=[],
    )
    assert BackupRef.from_manifest(m) == BackupRef(m.id, I, "p", T0)


# --- properties -------------------------------------------------------------------------

SPANS = [timedelta(hours=48), timedelta(days=60), timedelta(days=1200)]


@st.composite
def backup_sets(draw: st.DrawFn) -> tuple[list[BackupRef], datetime]:
    """Valid chains (parents chosen among earlier backups), then some backups vanish."""
    span = draw(st.sampled_from(SPANS))
    # Repeated seconds give equal finish times (different kinds): ties must not depend on order.
    seconds = draw(st.lists(st.integers(0, int(span.total_seconds())), max_size=25))
    refs: list[BackupRef] = []
    for s in sorted(seconds):
        when = T0 + timedelta(seconds=s)
        earlier_fulls = [r for r in refs if r.kind is F]
        kind = draw(st.sampled_from([F, I, D])) if refs else F
        if kind is I:
            new = ref(when, I, draw(st.sampled_from(refs)))
        elif kind is D and earlier_fulls:
            new = ref(when, D, draw(st.sampled_from(earlier_fulls)))
        else:
            new = ref(when)
        if all(r.id != new.id for r in refs):
            refs.append(new)
    gone = draw(st.sets(st.sampled_from([r.id for r in refs]), max_size=3) if refs else st.just(set()))
    now = T0 + span + timedelta(seconds=draw(st.integers(0, 86400 * 30)))
    return [r for r in refs if r.id not in gone], now


counts = st.none() | st.integers(0, 6)
policies = (
    st.builds(
        RetentionPolicy.model_construct,
        keep_last=counts,
        keep_hourly=counts,
        keep_daily=counts,
        keep_weekly=counts,
        keep_monthly=counts,
        keep_yearly=counts,
        keep_within=st.none() | st.integers(0, 24 * 400).map(lambda h: timedelta(hours=h)),
    )
    .filter(lambda p: p.keeps_something)
    .map(lambda p: RetentionPolicy(**p.model_dump(exclude={"orphan_grace"})))
)


def restorable_ids(refs: list[BackupRef]) -> set[str]:
    """Independent oracle: an id is restorable if its parents lead to a present full."""
    by_id = {r.id: r for r in refs}
    out = set()
    for r in refs:
        cur, seen = r, set()
        while cur.kind is not F and cur.parent_id in by_id and cur.id not in seen:
            seen.add(cur.id)
            cur = by_id[cur.parent_id]
        if cur.kind is F:
            out.add(r.id)
    return out


PROPS = settings(max_examples=150, deadline=None)


@PROPS
@given(backup_sets(), policies)
def test_every_id_decided_chains_intact_newest_kept(
    data: tuple[list[BackupRef], datetime], policy: RetentionPolicy
) -> None:
    refs, now = data
    decisions = plan(refs, policy, now)
    by_id = {r.id: r for r in refs}
    assert set(decisions) == set(by_id)  # (1)
    good = restorable_ids(refs)
    for rid, d in decisions.items():
        assert d.reasons, rid
        if d.keep:  # (2) the whole ancestor chain is kept, and it is restorable
            assert rid in good
            cur = by_id[rid]
            while cur.kind is not F:
                assert cur.parent_id is not None
                assert decisions[cur.parent_id].keep
                cur = by_id[cur.parent_id]
        else:
            assert rid not in good or d.reasons == ("no rule keeps it",)
    if good:  # (3)
        newest = max((by_id[g] for g in good), key=lambda r: (r.finished_at, r.id))
        assert decisions[newest.id].keep
        assert "newest restorable backup" in decisions[newest.id].reasons
    assert all(decisions[b].keep is False for b in set(by_id) - good)


@PROPS
@given(backup_sets(), st.integers(0, 30), policies)
def test_keep_last_keeps_at_least_n(data: tuple[list[BackupRef], datetime], n: int, other: RetentionPolicy) -> None:
    refs, now = data
    policy = other.model_copy(update={"keep_last": max(n, other.keep_last or 0)})
    kept = summarize(plan(refs, policy, now))[0]
    assert len(kept) >= min(n, len(restorable_ids(refs)))  # (4)


@PROPS
@given(st.data(), backup_sets(), policies)
def test_input_order_does_not_matter(
    data: st.DataObject, sets: tuple[list[BackupRef], datetime], policy: RetentionPolicy
) -> None:
    refs, now = sets
    shuffled = data.draw(st.permutations(refs))
    assert plan(shuffled, policy, now) == plan(refs, policy, now)  # (5)
    assert list(plan(shuffled, policy, now)) == list(plan(refs, policy, now))


def combine(a: RetentionPolicy, b: RetentionPolicy) -> RetentionPolicy:
    """Policy A+B: every rule of both, each as generous as the more generous of the two."""
    fields = ["keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly"]
    merged: dict = {f: max(getattr(a, f) or 0, getattr(b, f) or 0) for f in fields}
    merged["keep_within"] = max(a.keep_within or timedelta(0), b.keep_within or timedelta(0))
    return RetentionPolicy(**merged)


@PROPS
@given(backup_sets(), policies, policies)
def test_adding_rules_never_deletes_more(
    data: tuple[list[BackupRef], datetime], a: RetentionPolicy, b: RetentionPolicy
) -> None:
    refs, now = data
    kept_a = set(summarize(plan(refs, a, now))[0])
    kept_ab = set(summarize(plan(refs, combine(a, b), now))[0])
    assert kept_a <= kept_ab  # (6)


# --- clocks: future-dated, past-dated and out-of-order backups ----------------------------

TODAY = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)  # a Wednesday
SKEW = timedelta(hours=3)


def stored(r: BackupRef, at: datetime | None = None) -> BackupRef:
    """The same backup with the store's timestamp of its manifest (default: its own finish)."""
    return BackupRef(r.id, r.kind, r.parent_id, r.finished_at, at or r.finished_at + timedelta(seconds=1))


def skewed(real: datetime, kind: BackupKind = F, parent: BackupRef | None = None, by: timedelta = SKEW) -> BackupRef:
    """Taken at `real` by a worker whose clock is off by `by`: id and times shifted, store time real."""
    return stored(ref(real + by, kind, parent), real + timedelta(seconds=1))


def real_week() -> list[BackupRef]:
    """A full every day at 02:00 for a week, and two more today (08:00 and 09:00)."""
    days = [stored(ref(TODAY.replace(hour=2) - timedelta(days=d))) for d in range(7, 0, -1)]
    return days + [stored(ref(TODAY.replace(hour=h))) for h in (8, 9)]


def test_issue_case_a_future_dated_backup_takes_no_slot_and_deletes_nothing_real() -> None:
    backups = real_week()
    b_today_8, b_today_9 = backups[-2:]
    ahead = skewed(TODAY + timedelta(minutes=30))  # recorded 13:30, taken 10:30
    policy = RetentionPolicy(keep_daily=7, keep_weekly=4)
    decisions = plan(backups + [ahead], policy, TODAY + timedelta(minutes=31))
    assert decisions[b_today_9.id].reasons == ("newest restorable backup", "daily 2026-03-04", "weekly 2026-W10")
    assert decisions[ahead.id].keep and len(decisions[ahead.id].reasons) == 1
    held = decisions[ahead.id].reasons[0]
    assert held.startswith("held out of retention (takes no slot): future-dated")
    assert "3h after the store wrote its manifest" in held and "fix that worker's clock" in held
    # exactly what the same plan decides without the skewed backup, for every real one
    assert {k: v for k, v in decisions.items() if k != ahead.id} == plan(backups, policy, TODAY + timedelta(minutes=31))
    assert not decisions[b_today_8.id].keep  # same day as 09:00: the daily rule keeps one per day, as always


def test_the_store_clock_catches_a_skewed_backup_when_prune_runs_with_the_same_wrong_clock() -> None:
    backups = real_week()
    ahead = skewed(TODAY + timedelta(minutes=30))
    now_fast = TODAY + timedelta(minutes=31) + SKEW  # prune runs on the skewed worker too
    decisions = plan(backups + [ahead], RetentionPolicy(keep_last=2), now_fast)
    assert kept_ids(decisions) == sorted([backups[-1].id, backups[-2].id, ahead.id])
    assert "after the store wrote its manifest" in decisions[ahead.id].reasons[0]
    # without a store timestamp nothing could tell; the backup would be an ordinary newest one
    plain = plan(backups + [ref(ahead.finished_at)], RetentionPolicy(keep_last=2), now_fast)
    assert plain[ahead.id].reasons[0] == "newest restorable backup"


def test_without_a_store_timestamp_the_planning_clock_still_catches_future_backups() -> None:
    backups = real_week()
    ahead = ref(TODAY + SKEW)
    decisions = plan(backups + [ahead], RetentionPolicy(keep_last=1), TODAY)
    assert decisions[backups[-1].id].reasons == ("newest restorable backup", "last 1")
    assert "3h ahead of this worker's clock" in decisions[ahead.id].reasons[0]


def test_a_slow_planning_clock_makes_real_backups_look_future_and_they_are_kept() -> None:
    backups = real_week()
    slow_now = TODAY - SKEW  # 07:00: 08:00 and 09:00 look future-dated
    decisions = plan(backups, RetentionPolicy(keep_last=1), slow_now)
    for recent in backups[-2:]:
        assert decisions[recent.id].keep
        assert "the store agrees with the backup" in decisions[recent.id].reasons[0]
        assert (
            "planning retention is probably 2h slow" in decisions[recent.id].reasons[0]
            or "planning retention is probably 1h slow" in decisions[recent.id].reasons[0]
        )
    assert decisions[backups[-3].id].reasons == ("newest restorable backup", "last 1")


def test_a_past_dated_full_is_held_not_deleted_as_older_than_the_incrementals() -> None:
    f1 = stored(ref(TODAY - timedelta(hours=5)))
    i1 = stored(ref(TODAY - timedelta(hours=2), I, f1))
    f2 = skewed(TODAY - timedelta(minutes=10), by=-SKEW)  # new full by a slow worker: looks older than i1
    decisions = plan([f1, i1, f2], RetentionPolicy(keep_last=1), TODAY)
    assert decisions[i1.id].reasons == ("newest restorable backup", "last 1")
    assert decisions[f2.id].keep
    assert decisions[f2.id].reasons[0].startswith("held out of retention (takes no slot): past-dated: it records")
    assert f"1h 10min before {i1.id}, whose manifest the store wrote 1h 50min earlier" in decisions[f2.id].reasons[0]


def test_a_copied_repository_new_store_times_in_key_order_is_not_misdated() -> None:
    backups = real_week()
    copied_at = TODAY + timedelta(days=30)
    copy = [stored(r, copied_at + i * timedelta(minutes=10)) for i, r in enumerate(sorted(backups, key=lambda r: r.id))]
    assert clock_problems(copy, copied_at + timedelta(days=1)) == {}


def test_a_child_older_than_its_parent_is_held_with_its_chain() -> None:
    full = ref(TODAY - timedelta(hours=1))
    child = ref(TODAY - timedelta(hours=4), I, full)  # taken after full by a slow worker
    older = ref(TODAY - timedelta(days=1))
    decisions = plan([older, full, child], RetentionPolicy(keep_last=1), TODAY)
    assert decisions[child.id].keep and f"before its parent {full.id}" in decisions[child.id].reasons[0]
    assert decisions[full.id].reasons == ("newest restorable backup", "last 1", f"parent of {child.id}")
    assert not decisions[older.id].keep


def test_an_id_later_than_its_finish_is_held() -> None:
    odd = BackupRef(new_backup_id(F, TODAY), F, None, TODAY - timedelta(hours=1))
    assert "after it finished" in clock_problems([odd], TODAY + timedelta(hours=1))[odd.id]
    assert plan([odd, ref(TODAY - timedelta(days=1))], RetentionPolicy(keep_last=1), TODAY)[odd.id].keep


def test_future_chains_keep_their_real_parents_and_broken_ones_are_deleted() -> None:
    full = stored(ref(TODAY - timedelta(days=2)))
    newer = stored(ref(TODAY - timedelta(hours=1)))
    child = skewed(TODAY, I, full)  # incremental on an old full, by a fast worker
    lost = skewed(TODAY + timedelta(seconds=1), I, "20260101T000000.000Z-F")
    decisions = plan([full, newer, child, lost], RetentionPolicy(keep_last=1), TODAY + timedelta(minutes=5))
    assert decisions[child.id].keep and decisions[full.id].reasons == (f"parent of {child.id}",)
    assert decisions[lost.id] == Decision(False, ("chain broken: parent 20260101T000000.000Z-F is missing",))


def test_held_backups_are_released_once_older_than_everything_kept() -> None:
    old_skewed = skewed(TODAY - timedelta(days=30))  # 3h fast, a month ago
    recent = [stored(ref(TODAY - timedelta(days=d))) for d in (2, 1)]
    decisions = plan([old_skewed, *recent], RetentionPolicy(keep_last=2), TODAY)
    assert not decisions[old_skewed.id].keep
    assert decisions[old_skewed.id].reasons[0].startswith("future-dated")
    assert (
        decisions[old_skewed.id]
        .reasons[0]
        .endswith("released: older, by every clock, than every backup retention keeps")
    )
    # held while anything kept is older than it
    older = stored(ref(TODAY - timedelta(days=40)))
    assert plan([older, old_skewed, *recent], RetentionPolicy(keep_daily=60), TODAY)[old_skewed.id].keep


def test_clock_tolerance() -> None:
    near = stored(ref(TODAY + timedelta(minutes=4)), TODAY)
    assert clock_problems([near], TODAY) == {}
    assert near.id in clock_problems([near], TODAY, tolerance=timedelta(minutes=3))
    assert RetentionPolicy(keep_last=1).clock_tolerance == DEFAULT_CLOCK_TOLERANCE == timedelta(minutes=5)
    assert RetentionPolicy(keep_last=1, clock_tolerance="10min").clock_tolerance == timedelta(minutes=10)
    with pytest.raises(ValidationError, match="clock_tolerance must not be negative"):
        RetentionPolicy(keep_last=1, clock_tolerance=timedelta(hours=-1))
    with pytest.raises(RefusedError, match="timezone"):
        clock_problems([BackupRef("x", F, None, TODAY, TODAY.replace(tzinfo=None))], TODAY)


@st.composite
def with_future_dated(draw: st.DrawFn) -> tuple[list[BackupRef], list[BackupRef], datetime, bool]:
    """A valid set stored by an honest clock, plus backups written by fast workers (fulls, or
    children of real backups): recorded ahead of `now`, or of the store (same_clock)."""
    real, now = draw(backup_sets())
    real = [stored(r) for r in real]
    same_clock = draw(st.booleans())  # the planning worker shares the fast clock
    future: list[BackupRef] = []
    for _ in range(draw(st.integers(1, 4))):
        ahead = timedelta(seconds=draw(st.integers(int(DEFAULT_CLOCK_TOLERANCE.total_seconds()) + 2, 86400 * 40)))
        taken = now - timedelta(seconds=draw(st.integers(0, 86400)))
        parents = [r for r in real if r.finished_at <= taken]
        kind = draw(st.sampled_from([F, I, D])) if parents else F
        parent = draw(st.sampled_from(parents)) if kind is not F else None
        new = skewed(taken, kind, parent, by=ahead) if same_clock else stored(ref(now + ahead, kind, parent), taken)
        if new.id not in {r.id for r in real + future}:
            future.append(new)
    return real, future, (now + SKEW if same_clock else now), same_clock


SLOT_WORDS = ("newest restorable", "within ", "last ", "hourly ", "daily ", "weekly ", "monthly ", "yearly ")


@PROPS
@given(with_future_dated(), policies)
def test_future_dated_backups_never_cost_a_real_backup_and_never_fill_slots(
    data: tuple[list[BackupRef], list[BackupRef], datetime, bool], policy: RetentionPolicy
) -> None:
    real, future, now, _ = data
    # The planning clock: the honest one, or the same fast clock as the skewed workers.
    honest = plan(real, policy, now)
    decisions = plan(real + future, policy, now)
    for rid, before in honest.items():
        if before.keep:
            assert decisions[rid].keep, rid  # no real backup is deleted because of future-dated ones
    by_id = {r.id: r for r in real + future}
    for f in future:
        reasons = decisions[f.id].reasons
        assert not any(w.startswith(SLOT_WORDS) for w in reasons), reasons  # never fills a slot
        if decisions[f.id].keep:
            cur = f
            while cur.kind is not F:  # and a held backup keeps its chain
                assert decisions[cur.parent_id].keep
                cur = by_id[cur.parent_id]
        else:
            assert reasons[0].startswith("chain broken") or "released" in reasons[0]


@PROPS
@given(backup_sets(), st.integers(int(DEFAULT_CLOCK_TOLERANCE.total_seconds()), 86400 * 10), policies)
def test_a_slow_planning_clock_never_deletes_more(
    data: tuple[list[BackupRef], datetime], behind: int, policy: RetentionPolicy
) -> None:
    refs, now = data
    refs = [stored(r) for r in refs]
    kept_now = set(kept_ids(plan(refs, policy, now)))
    slow = now - timedelta(seconds=behind)
    kept_slow = set(kept_ids(plan(refs, policy, slow)))
    assert kept_now <= kept_slow
    future = {r.id for r in refs if r.finished_at - slow > DEFAULT_CLOCK_TOLERANCE}
    assert future & restorable_ids(refs) <= kept_slow


@st.composite
def with_past_dated(draw: st.DrawFn) -> tuple[list[BackupRef], list[BackupRef], datetime]:
    """A valid set stored by an honest clock, plus fulls taken later by a slow worker that
    record a finish before a real backup the store had already written (an inversion)."""
    real, now = draw(backup_sets())
    real = [stored(r) for r in real]
    slow: list[BackupRef] = []
    tol = DEFAULT_CLOCK_TOLERANCE
    for _ in range(draw(st.integers(0, 3)) if real else 0):
        witness = draw(st.sampled_from(real))  # stored before the slow one, finishing after it
        taken = witness.stored_at + tol + timedelta(seconds=draw(st.integers(1, 86400 * 3)))  # type: ignore[operator]
        recorded = witness.finished_at - tol - timedelta(seconds=draw(st.integers(1, 86400 * 30)))
        new = BackupRef(new_backup_id(F, recorded), F, None, recorded, min(taken, now))
        if new.stored_at - witness.stored_at > tol and new.id not in {r.id for r in real + slow}:  # type: ignore[operator]
            slow.append(new)
    return real, slow, now


@PROPS
@given(with_past_dated(), policies)
def test_past_dated_backups_are_held_and_cost_no_real_backup(
    data: tuple[list[BackupRef], list[BackupRef], datetime], policy: RetentionPolicy
) -> None:
    real, slow, now = data
    honest = plan(real, policy, now)
    decisions = plan(real + slow, policy, now)
    assert {k: v.keep for k, v in decisions.items() if k in honest} == {k: v.keep for k, v in honest.items()}
    for s in slow:
        assert clock_problems(real + slow, now)[s.id].startswith("past-dated")
        assert not any(w.startswith(SLOT_WORDS) for w in decisions[s.id].reasons)
        assert decisions[s.id].keep or "released" in decisions[s.id].reasons[0]
