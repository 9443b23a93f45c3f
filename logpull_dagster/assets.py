"""Assets ``logs/<source>`` (pull one window) and ``siem/<source>`` (deliver it): thin Dagster wiring.

The work is in ``pull.py`` and ``deliver.py``; here a partition key becomes a window, resources
become stores, results become materialization metadata, and failures become Dagster retries:

* time budget spent: ``RetryRequested`` at once; the retry resumes from the checkpointed token.
  Each such attempt made progress, so they do not count against ``retries``.
* a fault (5xx storm outlasting HTTP retries, a bad page): up to ``retries`` in-run retries with
  exponential delay, each resuming from the token. In-run retries matter because runs started by
  ``dagster asset materialize`` are never re-launched by Dagster's run retries.
* window leased by another run: fail at once, with who holds it; retrying would only wait again.
* window not settled by this host's clock or the API's (``pull.WindowNotSettled``): fail at once; the
  schedule requests it again on a later tick, once both clocks have passed its end + settle_lag.

Every count that bounds a retry is read from the window's checkpoint row (``pull.RunTally``), never
from this process: a retried step may run in another process, pod or task (docs/architecture.md).
"""

import datetime as dt
import queue
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass

import dagster as dg
from pydantic import Field

from logpull_dagster import skips
from logpull_dagster.checkpoints import CheckpointStore, LeaseHeld, LeaseLost
from logpull_dagster.checks import check_results, check_specs
from logpull_dagster.config import SourceBase
from logpull_dagster.deliver import LandedPageMissing, deliver_window
from logpull_dagster.keys import PLAIN, SINK_TAG, SOURCE_TAG, ResourceKeys, api_resource, logs_key, target_key
from logpull_dagster.ledger import WindowAudit, audit_window
from logpull_dagster.pull import (
    BudgetExhausted,
    Progress,
    PullFailed,
    PullResult,
    Readers,
    RunTally,
    WindowNotSettled,
    pull_window,
)
from logpull_dagster.redact import error_text, from_env
from logpull_dagster.resources import CheckpointsResource, LandingResource, LogSourceResource
from logpull_dagster.sinks import Sink
from logpull_dagster.sources import SourceError
from logpull_dagster.targets import LEGACY_SINK, DeliveryTarget
from logpull_dagster.windows import Window, rfc3339, window_for_key

# backfill_policy is marked beta in Dagster 1.13; single-run ranges are what we rely on, knowingly.
warnings.filterwarnings("ignore", message=r"Parameter `backfill_policy`", category=dg.BetaWarning)

# Bound on budget retries of one window in one run: each makes progress, but not forever.
MAX_BUDGET_RETRIES = 1000
# The API's clock (its Date header) and this host's may differ by this much, in seconds, before a
# window's step warns: beyond it, windows are read later than settle_lag says (host clock slow) or
# refused as not settled (host clock fast). A second or so is normal: Date has whole seconds.
CLOCK_SKEW_WARN = 60.0


def partitions_def(src: SourceBase) -> dg.TimeWindowPartitionsDefinition:
    if src.cadence == "daily":
        return dg.DailyPartitionsDefinition(start_date=src.start.strftime("%Y-%m-%d"), timezone="UTC")
    return dg.HourlyPartitionsDefinition(start_date=src.start.strftime("%Y-%m-%d-%H:%M"), timezone="UTC")


@dataclass
class _Window:
    """One window of this attempt of the step: what it read, for its metadata and its checks."""

    key: str
    window: Window
    audit: WindowAudit | None = None  # of what the window holds, done by the worker that completed it


class _Stores:
    """This config's shared resources in a step's context (their keys carry the config's namespace)."""

    def __init__(self, context: dg.AssetExecutionContext, keys: ResourceKeys) -> None:
        self.checkpoints: CheckpointsResource = getattr(context.resources, keys.checkpoints)
        self.landing: LandingResource = getattr(context.resources, keys.landing)


def _names_table(names: dict[str, int]) -> dg.TableMetadataValue:
    """The 50 most frequent event names, most frequent first (ties by name)."""
    top = sorted(names.items(), key=lambda kv: (-kv[1], kv[0]))[:50]
    return dg.MetadataValue.table(
        records=[dg.TableRecord({"event_name": str(name), "events": int(n)}) for name, n in top],
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


def build_logs_asset(src: SourceBase, keys: ResourceKeys = PLAIN,
                     targets: Sequence[DeliveryTarget] = ()) -> dg.AssetsDefinition:
    """``logs/<stream>``; ``targets``: the stream's deliveries (its ``pages_to_deliver`` counts the one furthest
    behind)."""
    api_key = api_resource(src.name)
    stages = [t.stage for t in targets] or ["deliver"]

    @dg.asset(
        key=logs_key(src.name),
        partitions_def=partitions_def(src),
        required_resource_keys={api_key, keys.checkpoints, keys.landing},
        # One group per config source: the streams of one account (Google's applications) sit together.
        group_name=src.group,
        kinds={src.type},
        description=f"{src.demo_notice}{src.stream}, pulled window by window with a checkpoint after every "
                    f"page (source `{src.name}`).",
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
        stores = _Stores(context, keys)
        store = stores.checkpoints.store
        todo: list[_Window] = []
        failed: dict[str, str] = {}  # windows this run gave up on, and why
        for key in context.partition_keys:
            window = window_for_key(src.cadence, key)
            cp = store.get(src.name, "pull", rfc3339(window.start))
            tally = RunTally.of(cp, run_id)
            if tally.done:  # completed earlier in this run, before a retry of the step
                continue
            if cp is not None and (tally.gave_up or tally.faults > src.retries):
                # failed for good earlier in this run (a retry of the step for another window): not again
                failed[key] = cp.last_error or "failed earlier in this run"
                continue
            if ranged and not config.reread and cp is not None and cp.is_complete:
                context.log.info(f"{src.name} {key}: complete already, skipped (reread: true reads it again)")
                continue
            todo.append(_Window(key, window))
        audits: dict[str, WindowAudit | None] = {}
        for w, outcome in _pull_windows(context, src, stores, todo, ranged):
            if isinstance(outcome, WindowFailed):
                failed[w.key] = outcome.description
                yield _failed_observation(context.asset_key, src, w, outcome, store, keys)
                continue
            audits[w.key] = w.audit
            metadata = _pull_metadata(src, w.window, outcome, stores.checkpoints, stages)
            if skips.describe(outcome.checkpoint.stats):
                # A known gap (an operator skipped a page) is never a plain complete window: no
                # materialization (the partition stays red or missing, never green); what it holds, what
                # was skipped, by whom and why are recorded on the partition, and delivery still sends
                # every event it has (sensors.py watches these observations too).
                yield dg.AssetObservation(asset_key=context.asset_key, partition=w.key,
                                          metadata={**metadata, **_gap_metadata(outcome.checkpoint.stats)})
            else:
                yield dg.AssetMaterialization(asset_key=context.asset_key, partition=w.key, metadata=metadata)
        # Windows this run landed events in, this attempt or an earlier one, have their events checked
        # (check_results audits those this attempt did not). The checks are recorded before the step
        # fails, so none of them ever reads "execution failed" as if the data were wrong.
        audited: dict[str, WindowAudit | None] = {}
        for key in context.partition_keys:
            cp = store.get(src.name, "pull", rfc3339(window_for_key(src.cadence, key).start))
            if RunTally.of(cp, run_id).events_landed:
                audited[key] = audits.get(key)
        yield from check_results(src, list(context.partition_keys), audited, store, stores.landing.store,
                                 dt.datetime.now(dt.UTC), keys)
        if failed:
            raise _run_failure(src, failed, keys)

    return _logs


PROGRESS_EVERY = 5.0  # seconds between progress lines of one window
Log = Callable[[str, str], None]  # (level, message): "info", "warning" or "error"


@dataclass(frozen=True)
class WindowFailed:
    """A window this run gives up on (retrying in this run cannot help, or its retries are spent)."""

    description: str
    metadata: dict[str, object]


def _pull_windows(context: dg.AssetExecutionContext, src: SourceBase, stores: _Stores, todo: list[_Window],
                  ranged: bool) -> Iterator[tuple[_Window, PullResult | WindowFailed]]:
    """Pull the windows of ``todo``, up to ``concurrent_windows`` at once; yield each one as it completes,
    or as it fails for good (``WindowFailed``: the others go on; the step fails at the end, naming all).

    A window that asks for a retry (a fault with retries left, a spent time budget) stops new windows
    from starting; those already reading finish (their checkpoints are kept either way), then the retry
    is raised, so the retried step resumes the rest. Workers never call Dagster's logger (it is not
    thread-safe): they queue messages, and this thread, the step's, writes them.
    """
    messages: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()

    def flush() -> None:
        while True:
            try:
                level, message = messages.get_nowait()
            except queue.Empty:
                return
            getattr(context.log, level)(message)

    def attempt(w: _Window, log: Log) -> PullResult | WindowFailed | None:
        try:
            result = _pull_one(context, src, stores, w, log, readers)
        except LeaseHeld as e:
            if not ranged:
                return WindowFailed(str(e), {})
            # In a backfill, the run holding this window is reading it: leave it to that run.
            log("warning", f"{w.key} skipped: {e}")
            return None
        except dg.Failure as e:  # every Failure of _pull_one is final (allow_retries=False)
            log("error", f"{w.key}: {e.description}")
            return WindowFailed(e.description or str(e), dict(e.metadata or {}))
        if result.tally.events_landed:  # audit here: beside the other windows' reads, not after all of them
            w.audit = audit_window(stores.landing.store, stores.checkpoints.store, src.name, w.window,
                                   result.checkpoint.page_seq)
        return result

    workers = min(src.concurrent_windows, len(todo))
    # The run's requests in flight, every window's together: a busy window split into sub-ranges
    # (subranges.py) draws from the same quota as the windows read beside it.
    readers = Readers(src.concurrent_windows)
    if workers <= 1:
        def direct(level: str, message: str) -> None:
            getattr(context.log, level)(message)

        for w in todo:
            result = attempt(w, direct)
            if result is not None:
                yield w, result
        return

    def queued(level: str, message: str) -> None:
        messages.put((level, message))

    failure: BaseException | None = None
    with ThreadPoolExecutor(workers, thread_name_prefix=f"logpull-{src.name}") as pool:
        futures = {pool.submit(attempt, w, queued): w for w in todo}
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
                    yield futures[future], result
        flush()
    if failure is not None:
        raise failure


def _pull_one(context: dg.AssetExecutionContext, src: SourceBase, stores: _Stores, w: _Window,
              log: Log, readers: Readers | None = None) -> PullResult:
    """One attempt at one window; Dagster retries of the step resume it from its checkpoint.

    Retry bounds come from the run's tally in the window's row (``RunTally``), which ``pull_window``
    updates before it raises: the same counts whichever process, pod or task runs the next attempt.
    """
    key, window = w.key, w.window
    last_logged = [-PROGRESS_EVERY]

    def progress(p: Progress) -> None:
        # Every log line is an event in Dagster's event log (~4 ms each): say where the window is at
        # the first page and then every PROGRESS_EVERY seconds, not at every page.
        now = time.monotonic()
        if p.page == 1 or now - last_logged[0] >= PROGRESS_EVERY:
            last_logged[0] = now
            log("info", f"{src.name} {key} page {p.page}: +{p.landed_in_page} events, "
                        f"{p.events_this_attempt} this attempt, {p.events_per_second:,.0f} events/s")

    api: LogSourceResource = getattr(context.resources, api_resource(src.name))
    if not api.tls_verify:
        log("warning", f"{src.name}: tls_verify is false: the API's certificate is NOT checked, so anyone on the "
                       f"path can read the credential and forge events; use ca_file for a private CA")
    # The account's request budget, kept in the run's checkpoint store: every run on every machine draws from it.
    rate = api.rate_gate(stores.checkpoints.store)
    try:
        source = api.open(rate)
    except SourceError as e:  # the credential cannot be sent at all: no request was made
        raise dg.Failure(description=f"window {window} of {src.name!r}: {e}", allow_retries=False) from None
    try:
        result = pull_window(
            source, window, source_name=src.name, checkpoints=stores.checkpoints.store,
            landing=stores.landing.store, owner=context.run.run_id, lease_ttl=src.lease_ttl.total_seconds(),
            lease_wait=src.effective_lease_wait.total_seconds(),
            time_budget=src.time_budget.total_seconds(), on_page=progress, redactor=api.redactor(), rate=rate,
            settle_lag=src.settle_lag.total_seconds(), readers=readers,
        )
        _warn_skew(src, key, result, log)
        if result.tally.rate_wait:
            log("info", f"{src.name} {key}: waited {result.tally.rate_wait:,.1f}s of {result.tally.elapsed:,.1f}s for "
                        f"the rate budget of account {src.effective_rate_account!r} ({src.rate_limit})")
        return result
    except BudgetExhausted as e:
        _warn_skew(src, key, e.result, log)
        tally = e.result.tally
        if not e.progress:  # read nothing new: a fault, not a budget (see BudgetExhausted)
            if tally.faults > src.retries:
                raise dg.Failure(f"{e}; it read no page in its budget {tally.faults} times", allow_retries=False) \
                    from None
            raise dg.RetryRequested(max_retries=context.retry_number + 1,
                                    seconds_to_wait=src.retry_delay.total_seconds()) from None
        log("warning", str(e))
        if tally.budget_retries > MAX_BUDGET_RETRIES:
            raise dg.Failure(f"{e}; gave up after {MAX_BUDGET_RETRIES} budgets in one run",
                             allow_retries=False) from None
        raise dg.RetryRequested(max_retries=context.retry_number + 1, seconds_to_wait=0) from None
    except LeaseLost as e:
        raise dg.Failure(description=str(e), allow_retries=False) from None
    except WindowNotSettled as e:  # not due yet: time, not a retry in this run, cures it (the schedule asks again)
        raise dg.Failure(description=str(e), metadata={"window": str(window)}, allow_retries=False) from None
    except PullFailed as e:
        if e.permanent:  # retrying now cannot help (see PullFailed): fail the window at once
            raise dg.Failure(
                description=f"{e}. Not retried: this will not get better by itself; the checkpoint is kept.",
                metadata={"window": str(window)}, allow_retries=False,
            ) from None
        faults = e.tally.faults
        if faults <= src.retries:
            wait = src.retry_delay.total_seconds() * 2 ** (faults - 1)
            log("warning", f"{e}. Retry {faults} of {src.retries} in {wait:g}s, resuming from the checkpoint.")
            raise dg.RetryRequested(max_retries=context.retry_number + 1, seconds_to_wait=wait) from None
        raise dg.Failure(
            description=f"{e}. Gave up after {src.retries} retries in this run; the checkpoint is kept, "
                        f"so the next run of this window resumes from the same page.",
            metadata={"window": str(window)},
            allow_retries=False,
        ) from None
    finally:
        source.close()


def _failed_observation(asset_key: dg.AssetKey, src: SourceBase, w: _Window, failure: WindowFailed,
                        store: CheckpointStore, keys: ResourceKeys) -> dg.AssetObservation:
    """Why a window failed, on its partition (the partitions view: the window, then its events): the
    error, the page it stopped at, what it holds so far, and the command that resumes it."""
    cp = store.get(src.name, "pull", rfc3339(w.window.start))
    meta: dict[str, object] = {
        "status": dg.MetadataValue.text("failed"),
        "window": dg.MetadataValue.text(str(w.window)),
        "error": dg.MetadataValue.text(failure.description[:4000]),
        "resume": dg.MetadataValue.text(f"{keys.rerun(src.name, [w.key])} (reads on from the checkpoint)"),
    }
    if cp is not None:
        meta["failed_at_page"] = dg.MetadataValue.int(cp.pages_read + 1)
        meta["pages_landed"] = dg.MetadataValue.int(cp.page_seq)
        meta["events_landed"] = dg.MetadataValue.int(cp.events)
        bad = cp.stats.get("bad_page")
        if isinstance(bad, dict):  # a page that cannot be read as it is: only an operator can skip it
            meta["unreadable_page"] = dg.MetadataValue.json(
                {k: bad.get(k) for k in ("page", "bytes", "sha256", "error")})
            meta["skip_page"] = dg.MetadataValue.text(
                f"logpull skip-page --source {src.name} --window {w.key} --reason '<why these events may be lost>' "
                f"(docs/operations.md section 9)")
    return dg.AssetObservation(asset_key=asset_key, partition=w.key, metadata=meta)


def _gap_metadata(stats: dict[str, object]) -> dict[str, object]:
    entries = [e for e in stats.get("skipped_pages", []) if isinstance(e, dict)]  # type: ignore[union-attr]
    columns = ["page", "bytes", "sha256", "by", "skipped_at", "reason", "rest_of_pass"]
    return {
        "status": dg.MetadataValue.text("known gap"),
        "known_gap": dg.MetadataValue.text(skips.describe(stats)),  # type: ignore[arg-type]
        "skipped_pages": dg.MetadataValue.table(
            records=[dg.TableRecord({c: str(e.get(c, "")) for c in columns}) for e in entries],
            schema=dg.TableSchema(columns=[dg.TableColumn(c, "string") for c in columns])),
    }


def _delivery_observation(asset_key: dg.AssetKey, target: DeliveryTarget, key: str, window: Window, error: str,
                          checkpoints: CheckpointStore, extra: dict[str, object]) -> dg.AssetObservation:
    """Why a window's delivery stopped, on its ``<sink>/<stream>`` partition, with where it stopped."""
    sent = checkpoints.get(target.stream.name, target.stage, rfc3339(window.start))
    pulled = checkpoints.get(target.stream.name, "pull", rfc3339(window.start))
    return dg.AssetObservation(asset_key=asset_key, partition=key, metadata={
        "status": dg.MetadataValue.text("failed"),
        "window": dg.MetadataValue.text(str(window)),
        "error": dg.MetadataValue.text(error[:4000]),
        "delivered_pages": dg.MetadataValue.int(sent.delivered_pages if sent else 0),
        "landed_pages": dg.MetadataValue.int(pulled.landed_pages if pulled else 0),
        **extra,
    })


def _run_failure(src: SourceBase, failed: dict[str, str], keys: ResourceKeys) -> dg.Failure:
    """The step's failure, naming every window that failed and why (each keeps its checkpoint)."""
    if len(failed) == 1:
        description = next(iter(failed.values()))
    else:
        description = (f"{len(failed)} windows of {src.name!r} failed: "
                       + "; ".join(f"{k}: {why[:300]}" for k, why in sorted(failed.items()))
                       + f". Each keeps its checkpoint; {keys.rerun(src.name, sorted(failed))} resumes them.")
    return dg.Failure(description=description, allow_retries=False, metadata={
        "failed_windows": dg.MetadataValue.json({k: why[:1000] for k, why in sorted(failed.items())})})


def _warn_skew(src: SourceBase, key: str, result: PullResult, log: Log) -> None:
    """Warn when the API's clock and this host's differ by more than CLOCK_SKEW_WARN."""
    skew = result.api_clock_skew
    if skew is None or abs(skew) <= CLOCK_SKEW_WARN:
        return
    if skew < 0:
        effect = ("this host's clock is fast: windows it finds due may be refused as not settled by the API's "
                  "clock, and fail until the API's clock gets there")
    else:
        effect = "this host's clock is slow: windows are requested later than settle_lag says"
    log("warning", f"{src.name} {key}: the API's clock (its Date header) is {abs(skew):,.0f} s "
                   f"{'behind' if skew < 0 else 'ahead of'} this host's; {effect}. Sync this host's clock (NTP)")


def _pull_metadata(src: SourceBase, window: Window, result: PullResult, checkpoints: CheckpointsResource,
                   stages: Sequence[str] = ("deliver",)) -> dict[str, object]:
    cp, tally = result.checkpoint, result.tally
    sent = [checkpoints.store.get(src.name, stage, cp.window_start) for stage in stages]
    behind = min((d.delivered_pages if d else 0) for d in sent)  # the sink furthest behind
    stats = cp.stats
    meta: dict[str, object] = {
        "dagster/row_count": dg.MetadataValue.int(cp.events),
        "window": dg.MetadataValue.text(str(window)),
        "status": dg.MetadataValue.text(cp.status),
        "new_events": dg.MetadataValue.int(tally.events_landed),
        "events": dg.MetadataValue.int(cp.events),
        "pages_read": dg.MetadataValue.int(tally.pages_read),
        "pages_landed": dg.MetadataValue.int(cp.page_seq),
        "pages_to_deliver": dg.MetadataValue.int(cp.landed_pages - behind),
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
        # Of elapsed_seconds, the time its requests waited for the account's rate budget (rate_limit).
        "rate_wait_seconds": dg.MetadataValue.float(round(tally.rate_wait, 3)),
        "events_per_second": dg.MetadataValue.float(
            round(tally.events_landed / tally.elapsed, 1) if tally.elapsed > 0 else 0.0),
        "landing": dg.MetadataValue.path(result.landed[0].rsplit("/", 1)[0] if result.landed else "(no new page)"),
    }
    if stats.get("last_read_at"):
        meta["last_read_at"] = dg.MetadataValue.text(stats["last_read_at"])
    if stats.get("api_clock_skew_s") is not None:  # the API's clock minus this host's at its latest answer
        meta["api_clock_skew_seconds"] = dg.MetadataValue.float(float(stats["api_clock_skew_s"]))
    if stats.get("quota_remaining_min") is not None:  # the API reports its rate-limit headroom (Okta)
        meta["rate_limit_remaining_min"] = dg.MetadataValue.int(int(stats["quota_remaining_min"]))
    if isinstance(split := stats.get("split"), dict):  # the latest pass was read as sub-ranges (subranges.py)
        meta["subranges"] = dg.MetadataValue.int(int(split.get("subranges", 0)))
        speeds = split.get("events_per_second") or []
        meta["subrange_events_per_second"] = dg.MetadataValue.text(
            f"min {min(speeds):,}, max {max(speeds):,}, of {len(speeds)}" if speeds else "")
    if stats.get("first_event_time"):
        meta["first_event_time"] = dg.MetadataValue.text(stats["first_event_time"])
        meta["last_event_time"] = dg.MetadataValue.text(stats["last_event_time"])
    if stats.get("names"):
        meta["events_per_name"] = _names_table(stats["names"])
    return meta


def build_delivery_asset(target: DeliveryTarget, keys: ResourceKeys = PLAIN) -> dg.AssetsDefinition:
    """``<sink>/<stream>``: one stream's windows delivered to one sink (``targets.py``), with its own
    checkpoint (stage), retries and lease, so one sink being down never holds another back."""
    src, sink_key = target.stream, keys.sink(target.sink)
    legacy = target.sink == LEGACY_SINK

    @dg.asset(
        key=target_key(target),
        deps=[logs_key(src.name)],
        partitions_def=partitions_def(src),
        required_resource_keys={keys.checkpoints, keys.landing, sink_key},
        group_name=src.group,
        kinds=target.kinds,
        description=f"{src.demo_notice}The window's landed `{src.name}` events delivered to the "
                    + ("SIEM sink" if legacy else f"sink `{target.sink}`") + ", each once.",
        tags={SOURCE_TAG: src.name, SINK_TAG: target.sink},
        retry_policy=dg.RetryPolicy(max_retries=target.retries, delay=target.retry_delay.total_seconds(),
                                    backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS),
        # The sensor sends adjacent windows as one range run; each window is recorded as it is delivered.
        backfill_policy=dg.BackfillPolicy.single_run(),
        output_required=False,
    )
    def _deliver(context: dg.AssetExecutionContext) -> Iterator[dg.AssetMaterialization | dg.AssetObservation]:
        stores = _Stores(context, keys)
        checkpoints = stores.checkpoints.store
        sink: Sink = getattr(context.resources, sink_key).sink
        # The sink's secrets (a collector's token, a cluster's key): masked in every error this step writes.
        redactor = from_env(ref.env for ref in target.config.secret_refs())
        asset = "/".join(target.asset_path)
        # Windows whose landed pages are gone: each one stops, the others are delivered, and the step then
        # fails naming every one of them (retrying cannot bring a page back: `logpull recover` can).
        missing: dict[str, LandedPageMissing] = {}
        for key in context.partition_keys:
            window = window_for_key(src.cadence, key)
            sent = checkpoints.get(src.name, target.stage, rfc3339(window.start))
            if sent is not None and sent.is_complete and sent.stats.get("completed_by") == context.run.run_id:
                continue  # delivered earlier in this run, before a retry of the step
            try:
                res = deliver_window(
                    window, source_name=src.name, checkpoints=checkpoints,
                    landing=stores.landing.store, sink=sink, stage=target.stage,
                    owner=context.run.run_id, lease_ttl=target.lease_ttl.total_seconds(),
                    lease_wait=target.lease_wait.total_seconds(), redactor=redactor,
                )
            except (LeaseHeld, LeaseLost) as e:
                raise dg.Failure(description=str(e), allow_retries=False) from None
            except LandedPageMissing as e:
                context.log.error(str(e))
                missing[key] = e
                yield _delivery_observation(context.asset_key, target, key, window, str(e), checkpoints, {
                    "missing_page": dg.MetadataValue.int(e.page),
                    "recover": dg.MetadataValue.text(f"logpull recover --source {src.name} --window {key}, then read "
                                                     f"and deliver the window again (docs/operations.md section 10)"),
                })
                continue
            except Exception as e:
                why = error_text(e, redactor)
                permanent = bool(getattr(e, "permanent", False))  # retrying cannot mend it (sinks/__init__.py)
                if permanent or context.retry_number >= target.retries:  # the last attempt: say why, then fail
                    yield _delivery_observation(context.asset_key, target, key, window, why, checkpoints, {
                        "resume": dg.MetadataValue.text(f"{keys.launch} {asset} --partition {key} (resumes at the "
                                                         f"page it stopped at)")})
                # The text, redacted, not the exception: Dagster writes a raised exception's message and its
                # chain into the event log as they are.
                raise dg.Failure(description=why, allow_retries=not permanent) from None
            if res.reconciled:
                context.log.warning(f"{src.name} {key}: the checkpoint store had no record of this window's delivery "
                                    f"to {target.sink}, but the sink held {res.already_delivered} of its events; "
                                    f"delivered only the {res.events} it did not hold (see docs/operations.md)")
            if res.at_least_once:
                context.log.warning(f"{src.name} {key}: the window was recovered, and {target.sink} cannot tell which "
                                    f"of its events it holds already: those it received before are sent again "
                                    f"(at-least-once)")
            if res.resent:
                context.log.warning(f"{src.name} {key}: {res.resent} events were sent to {target.sink} again because "
                                    f"it did not confirm an earlier send in time; they may be in it twice")
            if res.pending_pull:
                context.log.warning(f"window {window} is not completely pulled yet; delivered what has landed")
            context.log.info(f"{src.name} {key}: delivered {res.events} events to {target.sink} in {res.batches} "
                             f"batches ({res.total_events} in total for the window)")
            meta: dict[str, object] = {
                "dagster/row_count": dg.MetadataValue.int(res.total_events),
                "window": dg.MetadataValue.text(str(window)),
                "sink": dg.MetadataValue.text(target.sink),
                "delivered_events": dg.MetadataValue.int(res.events),
                "delivered_batches": dg.MetadataValue.int(res.batches),
                # After a lost checkpoint store: events the SIEM side held already, left out (deliver.py).
                "already_delivered": dg.MetadataValue.int(res.already_delivered),
                "reconciled": dg.MetadataValue.bool(res.reconciled),
                # Events sent again because the SIEM did not confirm an earlier send in time (a Splunk HEC
                # ack that never turned true): the only duplicates such a sink's guarantee allows.
                "resent_events": dg.MetadataValue.int(res.resent),
                # Pages a `logpull recover` recorded as lost, passed over: their events were landed again.
                "lost_pages_passed": dg.MetadataValue.int(res.lost_pages),
                "window_pull_complete": dg.MetadataValue.bool(not res.pending_pull),
                # Where the sink keeps the stream (a folder, an index, a URL without secrets).
                "siem_folder" if legacy else "location": dg.MetadataValue.path(sink.location(src.name)),
                "batch_files": dg.MetadataValue.json(res.outputs[-20:]),
                "delivered_at": dg.MetadataValue.text(rfc3339(dt.datetime.now(dt.UTC))),
            }
            yield dg.AssetMaterialization(asset_key=context.asset_key, partition=key, metadata=meta)
        if missing:
            first = next(iter(missing.values()))
            raise dg.Failure(
                description=(str(first) if len(missing) == 1 else
                             f"{len(missing)} windows have landed pages that are gone, so their delivery stopped "
                             f"there: " + "; ".join(f"{k}: page {e.page}" for k, e in missing.items())
                             + f". The first: {first}"),
                metadata={"windows": dg.MetadataValue.json({k: e.page for k, e in missing.items()})},
                allow_retries=False)

    return _deliver
