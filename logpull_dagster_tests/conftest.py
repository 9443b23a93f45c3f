from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from logpull_dagster.checkpoints.sqlite import SqliteCheckpointStore
from logpull_dagster.landing.local import LocalLandingStore


@pytest.fixture(scope="session", autouse=True)
def no_telemetry() -> Iterator[None]:
    """Dagster sends no telemetry from the tests, nor from any CLI they start (which inherits this
    environment); set for the whole session and put back at its end, as every other variable a test sets."""
    with pytest.MonkeyPatch.context() as mp:
        if "DAGSTER_DISABLE_TELEMETRY" not in os.environ:
            mp.setenv("DAGSTER_DISABLE_TELEMETRY", "1")
        yield


@pytest.fixture(autouse=True)
def environment_put_back() -> Iterator[None]:
    """A variable a test sets without monkeypatch stays set for every later test of its xdist worker (a
    config path whose folder is gone, a DAGSTER_HOME): such a test errors here, naming the variables.
    Autouse, so it is set up before the test's own monkeypatch and checks after that has put things back."""
    before = dict(os.environ)
    yield
    after = dict(os.environ)
    changed = sorted(k for k in before.keys() | after.keys()
                     if before.get(k) != after.get(k) and k != "PYTEST_CURRENT_TEST")  # pytest's own, per phase
    assert not changed, f"this test changed the environment without monkeypatch (use monkeypatch.setenv): {changed}"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteCheckpointStore]:
    s = SqliteCheckpointStore(tmp_path / "checkpoints.db")
    yield s
    s.close()


@pytest.fixture
def landing(tmp_path: Path) -> LocalLandingStore:
    return LocalLandingStore(tmp_path / "landing")


# ---- the simulator, over real HTTP ----------------------------------------------------------------

import datetime as dt  # noqa: E402

from logpull_dagster.simulator import Simulator  # noqa: E402
from logpull_dagster_tests.servers import SimProcess  # noqa: E402

# The day the tests read: yesterday (UTC), taken from the clock once per session. Its windows are
# always settled, and a source that starts the day before it has at most 72 hourly partitions up to
# now, whatever the date: a fixed date here would let "partitions up to now", "due windows" and
# freshness grow with the calendar (issue 9). Only the simulator's own tests (test_simulator.py) keep
# a fixed date, because nothing there is compared with the wall clock.
DAY = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(days=1)
# The sim clock: windows of DAY before noon are fully published.
SIM_NOW = DAY + dt.timedelta(hours=12)


def hour(h: float) -> dt.datetime:
    """DAY plus ``h`` hours (negative: the day before)."""
    return DAY + dt.timedelta(hours=h)


def key(h: int) -> str:
    """The hourly partition key of the window starting ``h`` hours into DAY."""
    return hour(h).strftime("%Y-%m-%d-%H:%M")


def ts(h: float) -> str:
    """RFC 3339 of ``hour(h)``, seconds precision, as window bounds are written."""
    return hour(h).strftime("%Y-%m-%dT%H:%M:%SZ")


def ms(h: float) -> str:
    """RFC 3339 of ``hour(h)`` with milliseconds, as Google writes an event's ``id.time``."""
    return hour(h).strftime("%Y-%m-%dT%H:%M:%S.000Z")
TOKEN = "s3cr3t-test-token-1f0a"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(seed=11, events_per_hour=300, token=TOKEN) as s:
        s.set_clock(now=SIM_NOW)
        yield s


@pytest.fixture
def sim_process() -> Iterator[SimProcess]:
    p = SimProcess("--seed", "5", "--events-per-hour", "2500", token=TOKEN)
    p.control("clock", {"now": SIM_NOW.isoformat()})
    yield p
    p.stop()


# ---- Dagster ------------------------------------------------------------------------------------

import dagster as dg  # noqa: E402


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture
def token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The configs written by the tests name LOGPULL_TEST_TOKEN for the API token."""
    monkeypatch.setenv("LOGPULL_TEST_TOKEN", TOKEN)


# ---- production backends: real servers on 127.0.0.1 (servers.py) ---------------------------------

from logpull_dagster_tests.servers import AWS_ENV, MotoServer, PostgresServer  # noqa: E402


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One moto_server process (DynamoDB and S3) for the session; tests use their own table or prefix."""
    server = MotoServer(tmp_path_factory.mktemp("moto")).start()
    yield server
    server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """moto's test credentials in this process's environment (boto3's usual chain reads them)."""
    for k, v in AWS_ENV.items():
        monkeypatch.setenv(k, v)
    return dict(AWS_ENV)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the session; tests take a fresh database each (``new_database``)."""
    server = PostgresServer().start()
    yield server
    server.close()


class Servers:
    """The real servers a backend needs, each started on first use (the session fixtures above)."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._request = request

    @property
    def moto(self) -> MotoServer:
        self._request.getfixturevalue("aws_env")
        return self._request.getfixturevalue("moto_server")

    @property
    def postgres(self) -> PostgresServer:
        return self._request.getfixturevalue("postgres_server")


@pytest.fixture
def servers(request: pytest.FixtureRequest) -> Servers:
    return Servers(request)

