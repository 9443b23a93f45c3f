"""``logpull``: answer "do we have every event of this period?" from the checkpoint store.

``logpull status [--source NAME] [--from T] [--to T] [--json] [--all]`` prints, per source, every due
window with its status, events, pages, late events, attempts, last read and delivery; a summary line
"N of M due windows complete and delivered, K gaps" with the gaps as time ranges. Runs of healthy
windows fold into one line unless ``--all``; nothing that needs attention is folded. Exit code 0 when
every due window in range is complete and delivered, 1 otherwise (a cron job or CI gate), 2 on a
usage or config error or a checkpoint store that cannot be reached (one line naming it), 3 on an
internal error (a bug; ``--debug`` or ``LOGPULL_DEBUG=1`` prints its traceback). ``EXIT_CODES`` says the
same in ``logpull --help``.

``logpull reset --source NAME (--window KEY | --from T --to T) [--dry-run]`` makes a window's (or every
window of a period that has a checkpoint) next run read it from page one again (landed events stay; dedupe
keeps the result exact). It refuses a window while a run holds it (exit 1), resetting the others.
``--dry-run`` prints each window it would reset, with its state, and changes nothing.

``logpull recover --source NAME (--window KEY | --from T --to T)`` makes whole again a window whose landed
pages (or journaled reads) were lost before they were delivered: it forgets the lost pages' event ids so
that the next run lands their events again, and delivery sends only what the SIEM does not hold
(``recovery.py``). Windows whose lost pages were all delivered are left alone.

``logpull skip-page --source NAME --window KEY --reason TEXT`` accepts losing the one page that keeps a
window failed because its body can never be read (see ``skips.py``): the window reads on past it, or
ends its pass there, and is shown as a known gap from then on, with the reason, who and when.

All of them read a real config file only ($LOGPULL_CONFIG or ./logpull.yaml, never the built-in demo config) and
an existing checkpoint database (never create an empty one); otherwise they exit 2 saying which.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import textwrap
import time
import traceback
from collections.abc import Callable, Sequence

import orjson
import pandas as pd

from logpull_dagster import skips, subranges
from logpull_dagster.checkpoints import Checkpoint, CheckpointStore, CheckpointStoreError, LeaseHeld
from logpull_dagster.config import ConfigError, LogpullConfig, SourceBase, config_path, load_config
from logpull_dagster.landing import LandingStore
from logpull_dagster.ledger import COLUMNS, collapse, freshness, gaps, window_rows
from logpull_dagster.plugins import open_checkpoints, open_landing
from logpull_dagster.recovery import describe, recover_window, survey
from logpull_dagster.targets import targets
from logpull_dagster.windows import (
    CADENCE_STEP,
    KEY_FORMAT,
    UTC,
    Window,
    is_aligned,
    key_for_window,
    parse_time,
    rfc3339,
    window_for_key,
)

# Exit codes: every due window complete and delivered (or the command did what it said); gaps (or an
# operator command refused while a run holds the window); a usage or config error, or a checkpoint store
# that cannot be reached or used; a bug.
OK, GAPS, USAGE, INTERNAL = 0, 1, 2, 3

RESET_OWNER = "logpull-reset"
# The leases `logpull recover` holds while it rebuilds a window's ids (each page's commit renews them).
RECOVER_TTL = 300.0
SKIP_OWNER = "logpull-skip-page"


def _when(value: str) -> dt.datetime:
    """RFC 3339, a date (midnight UTC) or a partition key (``2026-11-26-10:00``)."""
    for parse in (parse_time, lambda v: window_for_key("hourly", v).start, lambda v: window_for_key("daily", v).start):
        try:
            return parse(value)
        except ValueError:
            continue
    raise argparse.ArgumentTypeError(f"{value!r} is not a time; write 2026-03-03, 2026-03-03T10:00:00Z "
                                     f"or a partition key such as 2026-03-03-10:00")


def _queued(config: LogpullConfig, src: SourceBase) -> set[str]:
    """Window starts a queued or starting run will read, when a Dagster instance is at hand."""
    if not os.environ.get("DAGSTER_HOME"):
        return set()
    import dagster as dg

    from logpull_dagster.schedules import run_windows

    try:
        with dg.DagsterInstance.get() as instance:
            records = instance.get_run_records(filters=dg.RunsFilter(
                job_name=f"pull_{src.name}",
                statuses=[dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING]))
    except Exception as e:  # the ledger is the checkpoint store's; Dagster's queue only adds "queued"
        print(f"logpull status: cannot read Dagster's run queue at DAGSTER_HOME={os.environ['DAGSTER_HOME']} "
              f"({type(e).__name__}: {_one_line(str(e), 200)}); windows a queued run will read show as missing",
              file=sys.stderr)
        return set()
    return {s for rec in records for s in run_windows(src, dict(rec.dagster_run.tags))}


def status(args: argparse.Namespace, config: LogpullConfig) -> int:
    now = dt.datetime.now(UTC)
    store = open_checkpoints(config)
    # --source names a stream, or a config source whose `applications` made several (all of them)
    sources = [s for s in config.sources if args.source in (s.name, s.group)] if args.source else config.sources
    report, ok = [], True
    try:
        for src in sources:
            sinks = [(t.sink, t.stage) for t in targets(config.all_sinks, [src])]
            rows = window_rows(src, store, now, start=args.from_, end=args.to, queued=_queued(config, src),
                               sinks=sinks)
            holes = gaps(rows, CADENCE_STEP[src.cadence])
            good = int(((rows["status"] == "complete") & (rows["delivered"] == "yes")).sum())
            fresh = freshness(src, store, now)
            ok = ok and not holes
            report.append((src, rows, holes, good, fresh))
    finally:
        store.close()

    if args.json:
        doc = {"ok": ok, "checked_at": rfc3339(now), "sources": [{
            "name": src.name, "due_windows": len(rows), "complete_and_delivered": good,
            "gaps": [[rfc3339(a), rfc3339(b)] for a, b in holes],
            "freshness": {"newest_complete_end": rfc3339(fresh.newest_complete.end) if fresh.newest_complete else None,
                          "lag_seconds": fresh.lag.total_seconds() if fresh.lag is not None else None,
                          "max_delay_seconds": fresh.max_delay.total_seconds(), "ok": fresh.ok},
            "windows": rows[[*COLUMNS, "deliveries"]].to_dict("records"),
        } for src, rows, holes, good, fresh in report]}
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
        return OK if ok else GAPS

    for src, rows, holes, good, fresh in report:
        print(f"{src.name}: {src.stream} ({src.type}), {src.cadence} windows from {rfc3339(src.start)}, "
              f"settle_lag {src.settle_lag}")
        if rows.empty:
            print("  no due window in range\n")
            continue
        table = rows[COLUMNS] if args.all else collapse(rows)
        print(_render(table))
        plural = "" if len(holes) == 1 else "s"
        summary = f"{src.name}: {good} of {len(rows)} due windows complete and delivered, {len(holes)} gap{plural}"
        if holes:
            shown = ", ".join(f"{rfc3339(a)} .. {rfc3339(b)}" for a, b in holes[:20])
            summary += f": {shown}" + (f" (+{len(holes) - 20} more)" if len(holes) > 20 else "")
        print(summary)
        if fresh.newest_complete is not None:
            lag = dt.timedelta(seconds=round(fresh.lag.total_seconds())) if fresh.lag is not None else None
            print(f"{src.name}: newest complete window ends {lag} before now "
                  f"({'ok' if fresh.ok else 'STALE'}, max {fresh.max_delay})")
        print()
    return OK if ok else GAPS


def _render(table: pd.DataFrame, detail_width: int = 110) -> str:
    """Text columns left-aligned, numbers right-aligned, long details cut (``--json`` has them whole)."""
    cut = table["detail"].map(lambda d: d if len(d) <= detail_width else d[: detail_width - 3] + "...")
    table = table.assign(detail=cut)
    left = {c: (lambda w: (lambda v: f"{v:<{w}}"))(max([len(c), *table[c].astype(str).map(len)]))
            for c in ("window", "status", "last_read", "delivered", "detail")}
    text = table.to_string(index=False, formatters=left, justify="left")
    return "\n".join(line.rstrip() for line in text.splitlines())


def window_problem(src: SourceBase, key: str, now: dt.datetime) -> str | None:
    """Why ``key`` is not a window of ``src`` that can be reset at ``now``, or None."""
    example = (now - CADENCE_STEP[src.cadence]).strftime(KEY_FORMAT[src.cadence])
    try:
        window = window_for_key(src.cadence, key)
    except ValueError:
        window = None
    if window is None or key_for_window(src.cadence, window) != key:
        return f"{key!r} is not a window key of {src.name}; its {src.cadence} windows are written like {example}"
    if not is_aligned(src.cadence, window.start):
        holder = window.start.replace(minute=0, second=0, microsecond=0).strftime(KEY_FORMAT[src.cadence])
        return (f"{key!r} is not a window of {src.name}: its {src.cadence} windows start on the hour; "
                f"the window holding that time is {holder}")
    if window.start < src.start:
        return (f"{key} is before the first window of {src.name} (start: {rfc3339(src.start)}); "
                f"no run reads it, so there is nothing to change")
    if window.end > now:
        return (f"{key} has not ended yet (it ends at {rfc3339(window.end)}, now is {rfc3339(now)}); "
                f"there is nothing to change")
    return None


def reset(args: argparse.Namespace, config: LogpullConfig) -> int:
    src = config.source(args.source)
    store = open_checkpoints(config)
    try:
        if args.window is not None:
            window = window_for_key(src.cadence, args.window)
            cp = store.get(src.name, "pull", rfc3339(window.start))
            if cp is None:
                print(f"{src.name} {args.window}: no checkpoint, nothing to reset; the next run reads it from "
                      f"page one")
                return OK
            rows = [cp]
        else:
            # Only windows a run has touched have anything to reset: those with a checkpoint in [from, to).
            rows = sorted((cp for cp in store.list(src.name, "pull")
                           if parse_time(cp.window_end) > args.from_ and parse_time(cp.window_start) < args.to),
                          key=lambda cp: cp.window_start)
            if not rows:
                print(f"{src.name}: no window in [{rfc3339(args.from_)}, {rfc3339(args.to)}) has a checkpoint; "
                      f"nothing to reset (a run reads each from page one)")
                return OK
        done, refused = [], 0
        now = time.time()
        for cp in rows:
            key = key_for_window(src.cadence, Window(parse_time(cp.window_start), parse_time(cp.window_end)))
            was = (f"{cp.status}, cursor {'set' if cp.cursor else 'none'}, {cp.events} events in {cp.page_seq} "
                   f"landed pages, kept")
            if args.dry_run:
                # The lease as the reset would find it (it may change before a real reset runs).
                held = f"; refused now: {cp.lease_owner} holds it" if cp.lease_owner and cp.lease_expires > now \
                    else ""
                print(f"{src.name} {key}: would reset (is {was}){held}")
                continue
            if _operator_write(store, cp, RESET_OWNER, _reset) is None:
                refused += 1
                continue
            print(f"{src.name} {key}: reset (was {was})")
            done.append(key)
    finally:
        store.close()
    if args.dry_run:
        print(f"dry run: nothing was changed; run the same command without --dry-run to reset "
              f"{'it' if len(rows) == 1 else f'these {len(rows)} windows'}")
        return OK
    if done:
        where = f"--partition {done[0]}" if len(done) == 1 else f"--partition-range {done[0]}...{done[-1]}"
        print(f"Read {'it' if len(done) == 1 else 'them'} again with:\n"
              f"  dagster asset materialize -m logpull_dagster --select logs/{src.name} {where}")
    return GAPS if refused else OK


def _operator_write(store: CheckpointStore, cp: Checkpoint, owner: str,
                    change: Callable[[Checkpoint, float], Checkpoint]) -> Checkpoint | None:
    """Take the window's lease for an operator command and write ``change`` of the row; None (said on
    stderr) while a run holds the window: the command must never write under a running pull."""
    now = dt.datetime.now(UTC).timestamp()
    try:
        held = store.acquire(cp.source, cp.stage, cp.window_start, cp.window_end, owner=owner, ttl=30, now=now)
    except LeaseHeld as e:
        print(f"refused: {e}", file=sys.stderr)
        return None
    return store.release(change(held, now), now=now)


def _reset(cp: Checkpoint, now: float) -> Checkpoint:
    import dataclasses

    when = dt.datetime.fromtimestamp(now, UTC)
    return dataclasses.replace(
        cp, cursor=None, pages_read=0, journaled=0, status="complete" if cp.status == "complete" else "failed",
        last_error=f"reset by an operator at {rfc3339(when)}; the next run reads the window from page one",
        stats=subranges.save(cp.stats, None),  # a split pass's sub-ranges go with its cursor
    )


def _operator() -> str:
    """Who ran the command, as skips and recoveries record it: the user behind sudo, else this process's
    user name (getpass: LOGNAME/USER, else the password database, so a container's root is "root" even
    with no USER set); the uid only when no name is known (a uid without a passwd entry)."""
    import getpass

    if sudo := os.environ.get("SUDO_USER"):
        return sudo
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid (KeyError before Python 3.13, OSError since)
        return f"uid {os.getuid()}"


def _recover_windows(args: argparse.Namespace, src: SourceBase, store: CheckpointStore) -> list[Window] | str:
    """The windows ``recover`` looks at, or why the selection is wrong."""
    step = CADENCE_STEP[src.cadence]
    if args.window is not None:
        if args.from_ is not None or args.to is not None:
            return "give either --window or --from/--to, not both"
        start = args.window
        if not is_aligned(src.cadence, start):
            return (f"{rfc3339(start)} is not the start of a {src.cadence} window of {src.name}; write a partition "
                    f"key (e.g. {(start.replace(minute=0, second=0, microsecond=0)).strftime(KEY_FORMAT[src.cadence])})"
                    f" or the window's start")
        return [Window(start, start + step)]
    if args.from_ is None and args.to is None:
        return "name the window (--window) or the period (--from/--to) to recover"
    rows = store.list(src.name, "pull")
    windows = [Window(parse_time(cp.window_start), parse_time(cp.window_end)) for cp in rows]
    return [w for w in windows if (args.from_ is None or w.end > args.from_) and (args.to is None or w.start < args.to)]


def recover(args: argparse.Namespace, config: LogpullConfig) -> int:
    src = config.source(args.source)
    store = open_checkpoints(config)
    try:
        if not hasattr(store, "forget_ids"):
            print(f"logpull recover: the checkpoint store {config.checkpoints.type!r} has no forget_ids (a plug-in "
                  f"older than `logpull recover`); upgrade it: see CheckpointStore.forget_ids", file=sys.stderr)
            return USAGE
        windows = _recover_windows(args, src, store)
        if isinstance(windows, str):
            print(f"logpull recover: {windows}", file=sys.stderr)
            return USAGE
        landing = open_landing(config)
        try:
            return _recover(config, src, store, landing, windows)
        finally:
            landing.close()
    finally:
        store.close()


def _recover(config: LogpullConfig, src: SourceBase, store: CheckpointStore, landing: LandingStore,
             windows: list[Window]) -> int:
    one = len(windows) == 1
    deliveries = targets(config.all_sinks, [src])
    stages = [t.stage for t in deliveries]
    done: list[Window] = []
    refused = 0
    for w in windows:
        key = key_for_window(src.cadence, w)
        seen = survey(store, landing, src.name, w, stages)
        where = landing.where(src.name, w)
        if seen.pull is None:
            if one:
                print(f"{src.name} {key}: nothing was ever landed for this window; nothing to recover (a run reads "
                      f"it from page one)")
            continue
        if not seen.needed:
            if seen.pages:
                print(f"{src.name} {key}: landed page(s) {describe(seen.pages)} are gone from {where}, but every one "
                      f"of them was delivered already: nothing to recover (the SIEM has their events)")
            elif one:
                print(f"{src.name} {key}: every landed page and journaled read is in {where}; nothing to recover")
            continue
        try:
            r = recover_window(store, landing, src.name, w, by=_operator(), stages=stages,
                               ttl=max(src.lease_ttl.total_seconds(), RECOVER_TTL), clock=time.time)
        except LeaseHeld as e:
            print(f"refused: {e}", file=sys.stderr)
            refused += 1
            continue
        lost = []
        if r.lost_pages:
            undelivered = len([p for p in r.lost_pages if p in seen.undelivered])
            lost.append(f"landed page(s) {describe(r.lost_pages)} of {seen.pull.landed_pages} ({undelivered} not "
                        f"delivered yet)")
        if r.lost_reads:
            lost.append(f"{len(r.lost_reads)} journaled read(s)")
        print(f"{src.name} {key}: recovered: {' and '.join(lost)} gone from {where}; kept {r.kept_pages} landed "
              f"page(s) ({r.kept_events} events). Its event ids but theirs are forgotten, so the next run reads the "
              f"window again from page one and lands every event they did not hold; delivery then sends only the "
              f"events the SIEM does not hold.")
        done.append(w)
    if done:
        keys = [key_for_window(src.cadence, w) for w in (done[0], done[-1])]
        where = f"--partition {keys[0]}" if len(done) == 1 else f"--partition-range {keys[0]}...{keys[1]}"
        print(f"Read {'it' if len(done) == 1 else 'them'} again now (or let the schedule do it), then deliver (or let "
              f"the delivery sensors do it):\n"
              f"  dagster asset materialize -m logpull_dagster --select logs/{src.name} {where}"
              + "".join(f"\n  dagster asset materialize -m logpull_dagster --select {'/'.join(t.asset_path)} {where}"
                        for t in deliveries))
    return GAPS if refused else OK


def skip_page(args: argparse.Namespace, config: LogpullConfig) -> int:
    src = config.source(args.source)
    window = window_for_key(src.cadence, args.window)
    store = open_checkpoints(config)
    try:
        cp = store.get(src.name, "pull", rfc3339(window.start))
        bad = cp.stats.get("bad_page") if cp is not None else None
        if cp is None or not isinstance(bad, dict) or not skips.stands_at(cp):
            state = "never read" if cp is None else cp.status
            print(f"logpull skip-page: {src.name} {args.window} ({state}) is not stopped at an unreadable page; "
                  f"nothing to skip (only a page that failed as not readable, and is still where the window "
                  f"stands, can be skipped)", file=sys.stderr)
            return USAGE
        by = _operator()
        done = _operator_write(store, cp, SKIP_OWNER,
                               lambda held, now: skips.skip(held, reason=args.reason, by=by, now=now))
        if done is None:
            return GAPS
    finally:
        store.close()
    print(f"{src.name} {args.window}: page {bad['page']} skipped ({bad['bytes']} bytes, sha256 {bad['sha256']}; "
          f"it failed with: {bad['error']}).")
    if bad.get("subrange") is not None:  # a page of one sub-range of a split window (subranges.py)
        rest = "the next run reads that sub-range on from the page after it" if bad.get("next_cursor") else \
            "no next page token could be found in that body: the rest of that sub-range was not read"
        print(f"It was page {bad.get('subrange_page')} of sub-range {bad['subrange'] + 1} of the window; {rest}, and "
              f"every other sub-range as it stands:\n  dagster asset materialize -m logpull_dagster --select "
              f"logs/{src.name} --partition {args.window}\nThe window is a known gap in `logpull status` from now on.")
    elif done.status == "complete":
        print("No next page token could be found in that body: the pass ends there, and the rest of it was not "
              "read. The window is a known gap in `logpull status` from now on.")
    else:
        print(f"The next run reads on from page {bad['page'] + 1}:\n  dagster asset materialize -m logpull_dagster "
              f"--select logs/{src.name} --partition {args.window}\nThe window is a known gap in `logpull status` "
              f"from now on.")
    return OK


EXIT_CODES = """exit codes:
  0  ok: every due window in range is complete and delivered, or the command did what it said
  1  gaps: a due window is failed, missing, in progress, a known gap or not delivered (status), or the
     command was refused because a run holds the window (reset, skip-page, recover)
  2  usage or config error, or a checkpoint store that cannot be reached or used (one line naming it)
  3  internal error: a bug; one line says what, --debug (or LOGPULL_DEBUG=1) prints the traceback

The config file is $LOGPULL_CONFIG, else ./logpull.yaml; the built-in demo config is never used here."""

SOURCE_HELP = "the stream to act on (a source's name, or <name>_<application> for one of its applications)"
WINDOW_HELP = "the window's partition key, e.g. 2026-11-26-10:00 (hourly) or 2026-11-26 (daily)"


def parser() -> argparse.ArgumentParser:
    """The ``logpull`` command line: every command and option with its help, the exit codes in the epilog."""
    from logpull_dagster import __version__

    # Raw, so that the exit codes keep their lines; the descriptions are wrapped here instead.
    raw = argparse.RawDescriptionHelpFormatter
    top = argparse.ArgumentParser(
        prog="logpull", formatter_class=raw, epilog=EXIT_CODES,
        description=textwrap.fill('Answer "do we have every event of this period?" from the checkpoint store, '
                                  "and mend a window by hand (reset, skip-page, recover).", 100))
    top.add_argument("--version", action="version", version=f"logpull-dagster {__version__}",
                     help="print the version of logpull-dagster and exit")
    debug_help = "on an internal error, print its traceback (as LOGPULL_DEBUG=1 does)"
    top.add_argument("--debug", action="store_true", help=debug_help)
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")

    def command(name: str, summary: str, detail: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=summary, description=textwrap.fill(f"{summary}. {detail}", 100),
                             epilog=EXIT_CODES, formatter_class=raw)
        # Also after the command (logpull status --debug); SUPPRESS keeps a --debug given before it.
        cmd.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
        return cmd

    st = command("status", "every due window of every source: complete, delivered, or why not",
                 "Runs of healthy windows fold into one line unless --all; a summary line per source names "
                 "the gaps. Exit 0 when every due window in range is complete and delivered, 1 otherwise.")
    st.add_argument("--source", help="one source, or one stream (default: every source)")
    st.add_argument("--from", dest="from_", type=_when, metavar="TIME",
                    help="first time of interest, inclusive (RFC 3339, a date or a partition key)")
    st.add_argument("--to", type=_when, metavar="TIME",
                    help="last time of interest, exclusive (RFC 3339, a date or a partition key)")
    st.add_argument("--json", action="store_true", help="machine-readable output: one JSON document")
    st.add_argument("--all", action="store_true", help="one line per window, healthy ones too")
    rs = command("reset", "make a window's (or a period's windows') next run read it from page one",
                 "Landed events stay; deduplication keeps the result exact. A window a run holds is refused "
                 "(exit 1); the others of a period are still reset. Name one window or a period.")
    rs.add_argument("--source", required=True, help=SOURCE_HELP)
    rs.add_argument("--window", help=WINDOW_HELP)
    rs.add_argument("--from", dest="from_", type=_when, metavar="TIME",
                    help="first time of a period to reset, inclusive (instead of --window; with --to)")
    rs.add_argument("--to", type=_when, metavar="TIME", help="end of the period to reset, exclusive (with --from)")
    rs.add_argument("--dry-run", action="store_true",
                    help="print the windows it would reset, with their state, and change nothing")
    sk = command("skip-page", "accept losing the unreadable page a window is stopped at (a known gap)",
                 "Only a page that failed as not readable, and is still where the window stands, can be "
                 "skipped; the window is shown as a known gap from then on, with the reason, who and when.")
    sk.add_argument("--source", required=True, help=SOURCE_HELP)
    sk.add_argument("--window", required=True, help=WINDOW_HELP)
    sk.add_argument("--reason", required=True, help="why the page's events may be lost (kept with the window)")
    rc = command("recover", "read a window again whose landed pages (or journaled reads) were lost",
                 "Its lost pages' event ids are forgotten, so that the next run lands their events again and "
                 "delivery sends only what the SIEM does not hold. Name one window or a period.")
    rc.add_argument("--source", required=True, help=SOURCE_HELP)
    rc.add_argument("--window", type=_when, metavar="KEY",
                    help="partition key or start of the window, e.g. 2026-11-26-10:00")
    rc.add_argument("--from", dest="from_", type=_when, metavar="TIME",
                    help="first time of a period to recover, inclusive (instead of --window)")
    rc.add_argument("--to", type=_when, metavar="TIME", help="end of the period to recover, exclusive")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)  # a usage error exits 2 here, with argparse's message
    debug = args.debug or bool(os.environ.get("LOGPULL_DEBUG"))
    try:
        config = _config(args)
        if isinstance(config, str):
            print(f"logpull {args.command}: {config}", file=sys.stderr)
            return USAGE
        return {"reset": reset, "skip-page": skip_page, "recover": recover}.get(args.command, status)(args, config)
    except CheckpointStoreError as e:  # unreachable, or unusable as configured: the message names it
        print(f"logpull {args.command}: cannot use the checkpoint store: {_one_line(str(e))}", file=sys.stderr)
        return USAGE
    except Exception as e:
        # No traceback file is left behind: a traceback may quote a secret the config resolved.
        print(f"logpull {args.command}: internal error ({type(e).__name__}: {_one_line(str(e))}); nothing was "
              f"written. This is a bug: please report it, with the traceback that "
              f"{'follows' if debug else '--debug (or LOGPULL_DEBUG=1) prints'}", file=sys.stderr)
        if debug:
            traceback.print_exc()
        return INTERNAL


def _reset_selection(args: argparse.Namespace) -> str | None:
    """Why ``reset``'s arguments name no window or period, or None. A period needs both ends: a reset
    makes every window in it read from the API again, so an open end is never taken as "all of them"."""
    ends = (args.from_ is not None, args.to is not None)
    if args.window is not None:
        return "give either --window or --from/--to, not both" if any(ends) else None
    if ends == (False, False):
        return "name the window (--window KEY) or the period (--from TIME --to TIME) to reset"
    if not all(ends):
        return (f"give both --from and --to (the period [from, to) to reset); only --{'from' if ends[0] else 'to'} "
                f"was given")
    return None


def _one_line(text: str, limit: int = 500) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _config(args: argparse.Namespace) -> LogpullConfig | str:
    """The config to answer from, or why the command cannot answer (a usage or config error: exit 2)."""
    from_, to = getattr(args, "from_", None), getattr(args, "to", None)
    if from_ is not None and to is not None and from_ >= to:
        return (f"--from {rfc3339(args.from_)} is not before --to {rfc3339(args.to)}; the range is [from, to), "
                f"so it holds no window")
    try:
        path = config_path()
        if path is None:
            return (f"no config file: LOGPULL_CONFIG is unset and there is no ./logpull.yaml in {os.getcwd()}; "
                    f"set LOGPULL_CONFIG to your config file (after `make demo`: "
                    f"LOGPULL_CONFIG=.logpull/demo/logpull.yaml). The built-in demo config is not used here")
        config = load_config(path)
    except ConfigError as e:
        return f"config error: {e}"
    if getattr(args, "source", None):
        streams = [s.name for s in config.sources if s.group == args.source and s.name != args.source]
        if streams and args.command == "status":
            return config
        try:
            src = config.source(args.source)
        except KeyError:
            if streams:
                return (f"source {args.source!r} in {path} reads several streams ({', '.join(streams)}); "
                        f"{args.command} works on one window of one stream: name it, e.g. --source {streams[0]}")
            names = ", ".join(s.name for s in config.sources)
            return f"no source named {args.source!r} in {path}; sources: {names}"
        if args.command == "reset" and (why := _reset_selection(args)):
            return why
        if args.command in ("reset", "skip-page") and args.window is not None and \
                (why := window_problem(src, args.window, dt.datetime.now(UTC))):
            return why
    missing = config.checkpoints.missing_state(config.resolve, str(path))  # before opening: that may create it
    return missing or config


if __name__ == "__main__":
    sys.exit(main())
