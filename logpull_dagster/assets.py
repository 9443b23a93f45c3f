"""Assets ``logs/<source>`` (pull one window) and ``siem/<source>`` (deliver it): thin Dagster wiring.

The work is in ``pull.py`` and ``deliver.py``; here a partition key becomes a window, resources
become stores, results become materialization metadata, and failures become Dagster retries:

* time budget spent: ``RetryRequested`` at once; the retry resumes from the checkpointed token.
  Each such attempt made progress, so they do not count against ``retries``.
* a fault (5xx storm outlasting HTTP retries, a bad page): up to ``retries`` in-run retries with
  exponential delay, each resuming from the token. In-run retries matter because runs started by
  ``dagster asset materialize`` are never re-launched by Dagster's run retries.
* window leased by another run: fail at once, with who holds it; retrying would only wait again.
"""


import datetime as dt
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field

from logpull_dagster.checkpoints import LeaseHeld, LeaseLost
from logpull_dagster.config import SourceConfig
from logpull_dagster.deliver import deliver_window
from logpull_dagster.ledger import WindowAudit, audit_window
from logpull_dagster.pull import BudgetExhausted, Progress, PullFailed, PullResult, pull_window
from logpull_dagster.resources import FileSiem, SqliteCheckpoints
from logpull_dagster.sources import SourceError
from logpull_dagster.windows import Window, key_for_window, rfc3339, window_for_key

# backfill_policy is marked beta in Dagster 1.13; single-run ranges are what we rely on, knowingly.
warnings.filterwarnings("ignore", message=r"Parameter `backfill_policy`", category=dg.BetaWarning)

# Bound on budget retries of one window in one run: each makes progress, but not forever.
MAX_BUDGET_RETRIES = 1000


def logs_key(source: str) -> dg.AssetKey:
    return dg.AssetKey(["logs", source])


def siem_key(source: str) -> dg.AssetKey:
    return dg.AssetKey(["siem", source])


def api_resource_key(source: str) -> str:
    return f"{source}_api"


def partitions_def(src: SourceConfig) -> dg.TimeWindowPartitionsDefinition:
    if src.cadence == "daily":
        return dg.DailyPartitionsDefinition(start_date=src.start.strftime("%Y-%m-%d"), timezone="UTC")
    return dg.HourlyPartitionsDefinition(start_date=src.start.strftime("%Y-%m-%d-%H:%M"), timezone="UTC")


@dataclass
class _RunTally:
    """What all attempts of one window in one run did (attempts retry inside one process)."""

    attempts: int = 0
    budget_retries: int = 0
    faults: int = 0
    pages_read: int = 0
    events_landed: int = 0
    http_retries: int = 0
    token_restarts: int = 0
    duplicates_dropped: int = 0
    outside_window_dropped: int = 0
    elapsed: float = 0.0
    resumed_from_page: int | None = None
    late_events: int = 0
    done: bool = False
    landed: list[str] = field(default_factory=list)
    audit: WindowAudit | None = None  # of what the window holds, done by the worker that completed it

    def add(self, r: PullResult) -> None:
        if self.attempts == 0:
            self.resumed_from_page = r.resumed_from_page
        self.attempts += 1
        self.pages_read += r.pages_read
        self.events_landed += r.events_landed
        self.late_events += r.late_events
        self.http_retries += r.http_retries
        self.token_restarts += r.token_restarts
        self.duplicates_dropped += r.duplicates_dropped
        self.outside_window_dropped += r.outside_window_dropped
        self.elapsed += r.elapsed
        self.landed += r.landed


_tallies: dict[tuple[str, str, str], _RunTally] = {}
_delivered: set[tuple[str, str, str]] = set()
_tallies_lock = threading.Lock()


def _tally(run_id: str, source: str, key: str) -> _RunTally:
    with _tallies_lock:
        return _tallies.setdefault((run_id, source, key), _RunTally())


def _forget(run_id: str, source: str) -> None:
    """The step is over for good (success or final failure): drop this run's tallies."""
    with _tallies_lock:
        for k in [k for k in _tallies if k[:2] == (run_id, source)]:
            del _tallies[k]


def _names_table(names: dict[str, int]) -> dg.TableMetadataValue:
    df = (pd.Series(names, dtype="int64").rename_axis("event_name").reset_index(name="events")
          .sort_values(["events", "event_name"], ascending=[False, True]).head(50))
    return dg.MetadataValue.table(
        records=[dg.TableRecord({"event_name": str(r.event_name), "events": int(r.events)})
                 for r in df.itertuples(index=False)],
        schema=dg.TableSchema(columns=[dg.TableColumn("event_name", "string"), dg.TableColumn("events", "int")]),
    )


class PullConfig(dg.Config):
    """Run config of ``logs/<source>``, e.g. ``--config-json '{"ops": {"logs__gws_login": {"config":
    {"reread": true}}}}'``."""

    reread: bool = Field(
        default=False,
        description="In a range run, read windows that are complete already, landing only events not landed "
                    "before. A single-window run always reads its window.",
    )


def build_logs_asset(src: SourceConfig) -> dg.AssetsDefinition:
    from logpull_dagster.checks import check_results, check_specs  # here: checks imports this module

    api_key = api_resource_key(src.name)

    @dg.asset(
        key=logs_key(src.name),
        partitions_def=partitions_def(src),
        required_resource_keys={api_key, "checkpoints", "landing"},
        group_name="logs",
        kinds={src.type},
        description=f"{src.demo_notice}{src.type} `{src.application}` audit events, pulled window by window "
                    f"with a checkpoint after every page (source `{src.name}`).",
        tags={"logpull/source": src.name},
        pool=src.effective_pool,
        # A range (CLI --partition-range, a UI backfill) runs as one run that reads window after window,
        # recording each window's materialization as soon as it is complete.
        backfill_policy=dg.BackfillPolicy.single_run(),
        # Materializations are recorded per window as they complete; there is no value to store.
        output_required=False,
        check_specs=check_specs(src),
    )
    def _logs(context: dg.AssetExecutionContext, config: PullConfig) -> Iterator[
            dg.AssetMaterialization | dg.AssetCheckResult]:
        ranged = len(context.partition_keys) > 1
        run_id = context.run.run_id
        store = context.resources.checkpoints.store
        todo: list[tuple[str, Window, _RunTally]] = []
        for key in context.partition_keys:
            window = window_for_key(src.cadence, key)
            tally = _tally(run_id, src.name, key)
            if tally.done:  # completed earlier in this run, before a retry of the step
                continue
            if ranged and not config.reread:
                cp = store.get(src.name, "pull", rfc3339(window.start))
                if cp is not None and cp.status == "complete" and not cp.reading:
                    tally.done = True
                    context.log.info(f"{src.name} {key}: complete already, skipped (reread: true reads it again)")
                    continue
            todo.append((key, window, tally))
        for key, window, tally, result in _pull_windows(context, src, todo, ranged):
            metadata = _pull_metadata(src, window, result, tally, context.resources.checkpoints)
            yield dg.AssetMaterialization(asset_key=context.asset_key, partition=key, metadata=metadata)
        tallies = {k: _tally(run_id, src.name, k) for k in context.partition_keys}
        audited = {k: t.audit for k, t in tallies.items() if t.events_landed}
        _forget(run_id, src.name)
        yield from check_results(src, list(context.partition_keys), audited, store, context.resources.landing.store,
                                 dt.datetime.now(dt.UTC))

    return _logs


PROGRESS_EVERY = 5.0  # seconds between progress lines of one window
Log = Callable[[str, str], None]  # (level, message): "info" or "warning"


def _pull_windows(context: dg.AssetExecutionContext, src: SourceConfig, todo: list[tuple[str, Window, _RunTally]],
                  ranged: bool) -> Iterator[tuple[str, Window, _RunTally, PullResult]]:
    """Pull the windows of ``todo``, up to ``concurrent_windows`` at once; yield each one as it completes.

    The first window that fails stops new windows from starting; those already reading finish (their
    checkpoints are kept either way), then the failure is raised, so a retry of the step resumes the
    rest. Workers never call Dagster's logger (it is not thread-safe): they queue messages, and this
    thread, the step's, writes them.
    """
    messages: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()

    def flush() -> None:
        while True:
            try:
                level, message = messages.get_nowait()
            except queue.Empty:
                return
            getattr(context.log, level)(message)

    def attempt(key: str, window: Window, tally: _RunTally, log: Log) -> PullResult | None:
        try:
            result = _pull_one(context, src, key, window, tally, log)
        except LeaseHeld as e:
            if not ranged:
                _forget(context.run.run_id, src.name)
                raise dg.Failure(description=str(e), allow_retries=False) from None
            # In a backfill, the run holding this window is reading it: leave it to that run.
            tally.done = True
            log("warning", f"{key} skipped: {e}")
            return None
        tally.done = True
        if tally.events_landed:  # audit here: beside the other windows' reads, not after all of them
            tally.audit = audit_window(context.resources.landing.store, context.resources.checkpoints.store,
                                       src.name, window, result.checkpoint.page_seq)
        return result

    workers = min(src.concurrent_windows, len(todo))
    if workers <= 1:
        def direct(level: str, message: str) -> None:
            getattr(context.log, level)(message)

        for key, window, tally in todo:
            result = attempt(key, window, tally, direct)
            if result is not None:
                yield key, window, tally, result
        return

    def queued(level: str, message: str) -> None:
        messages.put((level, message))

    failure: BaseException | None = None
    with ThreadPoolExecutor(workers, thread_name_prefix=f"logpull-{src.name}") as pool:
        futures = {pool.submit(attempt, key, window, tally, queued): (key, window, tally)
                   for key, window, tally in todo}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            flush()
            for future in done:
                if future.cancelled():
                    continue
                try:
                    result = future.result()
                except BaseException as e:
                    if failure is None:
                        failure = e
                        for other in pending:
                            other.cancel()
                    continue
                if result is not None:
                    yield (*futures[future], result)
        flush()
    if failure is not None:
        raise failure


def _pull_one(context: dg.AssetExecutionContext, src: SourceConfig, key: str, window: Window,
              tally: _RunTally, log: Log) -> PullResult:
    """One attempt at one window; Dagster retries of the step resume it from its checkpoint."""
    api_key = api_resource_key(src.name)
    run_id = context.run.run_id

    last_logged = [-PROGRESS_EVERY]

    def progress(p: Progress) -> None:
        # Every log line is an event in Dagster's event log (~4 ms each): say where the window is at
        # the first page and then every PROGRESS_EVERY seconds, not at every page.
        now = time.monotonic()
        if p.page == 1 or now - last_logged[0] >= PROGRESS_EVERY:
            last_logged[0] = now
            log("info", f"{src.name} {key} page {p.page}: +{p.landed_in_page} events, "
                        f"{p.events_this_attempt} this attempt, {p.events_per_second:,.0f} events/s")

    api = getattr(context.resources, api_key)
    if not getattr(api, "tls_verify", True):
        log("warning", f"{src.name}: tls_verify is false: the API's certificate is NOT checked, so anyone on the "
                       f"path can read the credential and forge events; use ca_file for a private CA")
    try:
        source = api.open()
    except SourceError as e:  # the credential cannot be sent at all: no request was made
        _forget(run_id, src.name)
        raise dg.Failure(description=f"window {window} of {src.name!r}: {e}", allow_retries=False) from None
    try:
        result = pull_window(
            source, window, source_name=src.name, checkpoints=context.resources.checkpoints.store,
            landing=context.resources.landing.store, owner=run_id, lease_ttl=src.lease_ttl.total_seconds(),
            lease_wait=src.effective_lease_wait.total_seconds(),
            time_budget=src.time_budget.total_seconds(), on_page=progress, redactor=api.redactor(),
        )
    except BudgetExhausted as e:
        tally.add(e.result)
        if not e.progress:  # read nothing new: a fault, not a budget (see BudgetExhausted)
            tally.faults += 1
            if tally.faults > src.retries:
                _forget(run_id, src.name)
                raise dg.Failure(f"{e}; it read no page in its budget {tally.faults} times", allow_retries=False) \
                    from None
            raise dg.RetryRequested(max_retries=context.retry_number + 1,
                                    seconds_to_wait=src.retry_delay.total_seconds()) from None
        tally.budget_retries += 1
        log("warning", str(e))
        if tally.budget_retries > MAX_BUDGET_RETRIES:
            _forget(run_id, src.name)
            raise dg.Failure(f"{e}; gave up after {MAX_BUDGET_RETRIES} budgets in one run",
                             allow_retries=False) from None
        raise dg.RetryRequested(max_retries=context.retry_number + 1, seconds_to_wait=0) from None
    except LeaseLost as e:
        _forget(run_id, src.name)
        raise dg.Failure(description=str(e), allow_retries=False) from None
    except PullFailed as e:
        if e.permanent:  # retrying now cannot help (see PullFailed): fail the window at once
            _forget(run_id, src.name)
            raise dg.Failure(
                description=f"{e}. Not retried: this will not get better by itself; the checkpoint is kept.",
                metadata={"window": str(window)}, allow_retries=False,
            ) from None
        tally.faults += 1
        if tally.faults <= src.retries:
            wait = src.retry_delay.total_seconds() * 2 ** (tally.faults - 1)
            log("warning", f"{e}. Retry {tally.faults} of {src.retries} in {wait:g}s, resuming from the checkpoint.")
            raise dg.RetryRequested(max_retries=context.retry_number + 1, seconds_to_wait=wait) from None
        _forget(run_id, src.name)
        raise dg.Failure(
            description=f"{e}. Gave up after {src.retries} retries in this run; the checkpoint is kept, "
                        f"so the next run of this window resumes from the same page.",
            metadata={"window": str(window)},
            allow_retries=False,
        ) from None
    finally:
        source.close()
    tally.add(result)
    return result


def _pull_metadata(src: SourceConfig, window: Window, result: PullResult, tally: _RunTally,
                   checkpoints: SqliteCheckpoints) -> dict[str, object]:
    cp = result.checkpoint
    delivered = checkpoints.store.get(src.name, "deliver", cp.window_start)
    stats = cp.stats
    meta: dict[str, object] = {
        "dagster/row_count": dg.MetadataValue.int(cp.events),
        "window": dg.MetadataValue.text(str(window)),
        "status": dg.MetadataValue.text(cp.status),
        "new_events": dg.MetadataValue.int(tally.events_landed),
        "events": dg.MetadataValue.int(cp.events),
        "pages_read": dg.MetadataValue.int(tally.pages_read),
        "pages_landed": dg.MetadataValue.int(cp.page_seq),
        "pages_to_deliver": dg.MetadataValue.int(cp.page_seq - (delivered.page_seq if delivered else 0)),
        "resumed_from_page": dg.MetadataValue.int(tally.resumed_from_page or 0),
        "attempts": dg.MetadataValue.int(tally.attempts),
        "window_attempts": dg.MetadataValue.int(cp.attempts),
        "read_passes": dg.MetadataValue.int(cp.passes),
        "budget_retries": dg.MetadataValue.int(tally.budget_retries),
        "fault_retries": dg.MetadataValue.int(tally.faults),
        "http_retries": dg.MetadataValue.int(tally.http_retries),
        "token_restarts": dg.MetadataValue.int(tally.token_restarts),
        "late_events": dg.MetadataValue.int(tally.late_events),
        "window_late_events": dg.MetadataValue.int(int(stats.get("late_events", 0))),
        "duplicates_dropped": dg.MetadataValue.int(tally.duplicates_dropped),
        "outside_window_dropped": dg.MetadataValue.int(tally.outside_window_dropped),
        "elapsed_seconds": dg.MetadataValue.float(round(tally.elapsed, 3)),
        "events_per_second": dg.MetadataValue.float(
            round(tally.events_landed / tally.elapsed, 1) if tally.elapsed > 0 else 0.0),
        "landing": dg.MetadataValue.path(str(Path(result.landed[0]).parent) if result.landed else "(no new page)"),
    }
    if stats.get("last_read_at"):
        meta["last_read_at"] = dg.MetadataValue.text(stats["last_read_at"])
    if stats.get("first_event_time"):
        meta["first_event_time"] = dg.MetadataValue.text(stats["first_event_time"])
        meta["last_event_time"] = dg.MetadataValue.text(stats["last_event_time"])
    if stats.get("names"):
        meta["events_per_name"] = _names_table(stats["names"])
    return meta


def build_siem_asset(src: SourceConfig) -> dg.AssetsDefinition:
    @dg.asset(
        key=siem_key(src.name),
        deps=[logs_key(src.name)],
        partitions_def=partitions_def(src),
        required_resource_keys={"checkpoints", "landing", "siem"},
        group_name="siem",
        kinds={"jsonl"},
        description=f"{src.demo_notice}The window's landed `{src.name}` events delivered to the SIEM sink, "
                    f"each once.",
        tags={"logpull/source": src.name},
        retry_policy=dg.RetryPolicy(max_retries=src.retries, delay=src.retry_delay.total_seconds(),
                                    backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS),
        # The sensor sends adjacent windows as one range run; each window is recorded as it is delivered.
        backfill_policy=dg.BackfillPolicy.single_run(),
        output_required=False,
    )
    def _siem(context: dg.AssetExecutionContext) -> Iterator[dg.AssetMaterialization]:
        checkpoints: SqliteCheckpoints = context.resources.checkpoints
        siem: FileSiem = context.resources.siem
        for key in context.partition_keys:
            done = (context.run.run_id, f"siem/{src.name}", key)
            if done in _delivered:  # delivered earlier in this run, before a retry of the step
                continue
            window = window_for_key(src.cadence, key)
            try:
                res = deliver_window(
                    window, source_name=src.name, checkpoints=checkpoints.store,
                    landing=context.resources.landing.store, sink=siem.sink,
                    owner=context.run.run_id, lease_ttl=src.lease_ttl.total_seconds(),
                    lease_wait=src.effective_lease_wait.total_seconds(),
                )
            except (LeaseHeld, LeaseLost) as e:
                raise dg.Failure(description=str(e), allow_retries=False) from None
            _delivered.add(done)
            if res.reconciled:
                context.log.warning(f"{src.name} {key}: the checkpoint store had no record of this window's delivery, "
                                    f"but the SIEM folder held {res.already_delivered} of its events; delivered only "
                                    f"the {res.events} it did not hold (see docs/operations.md)")
            if res.pending_pull:
                context.log.warning(f"window {window} is not completely pulled yet; delivered what has landed")
            context.log.info(f"{src.name} {key}: delivered {res.events} events in {res.batches} batches "
                             f"({res.total_events} in total for the window)")
            yield dg.AssetMaterialization(asset_key=context.asset_key, partition=key, metadata={
                "dagster/row_count": dg.MetadataValue.int(res.total_events),
                "window": dg.MetadataValue.text(str(window)),
                "delivered_events": dg.MetadataValue.int(res.events),
                "delivered_batches": dg.MetadataValue.int(res.batches),
                # After a lost checkpoint store: events the SIEM side held already, left out (deliver.py).
                "already_delivered": dg.MetadataValue.int(res.already_delivered),
                "reconciled": dg.MetadataValue.bool(res.reconciled),
                "window_pull_complete": dg.MetadataValue.bool(not res.pending_pull),
                "siem_folder": dg.MetadataValue.path(str(siem.sink.root / src.name)),
                "batch_files": dg.MetadataValue.json(res.outputs[-20:]),
                "delivered_at": dg.MetadataValue.text(rfc3339(dt.datetime.now(dt.UTC))),
            })
        _delivered.difference_update({d for d in _delivered if d[0] == context.run.run_id})

    return _siem


RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def run_request(src: SourceConfig, windows: list[Window], run_key: str, tags: dict[str, str],
                run_config: dict[str, object] | None = None) -> dg.RunRequest:
    """A run over one window (its partition) or over adjacent windows (a partition range, one run)."""
    first, last = key_for_window(src.cadence, windows[0]), key_for_window(src.cadence, windows[-1])
    if len(windows) == 1:
        return dg.RunRequest(run_key=run_key, partition_key=first, tags=tags, run_config=run_config or {})
    return dg.RunRequest(run_key=run_key, tags={**tags, RANGE_START: first, RANGE_END: last},
                         run_config=run_config or {})
