"""Driving the real ``dagster`` CLI against a config file, as an operator would."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import orjson
import yaml

from .conftest import TOKEN, Servers, ts
from .servers import AWS_ENV

DAGSTER = str(Path(sys.executable).parent / "dagster")


REPO = Path(__file__).resolve().parents[1]
# Every state backend the real-CLI tests run against: a function of the test's folder and the real
# servers (conftest.Servers) returning the config's store keys and the environment they need. The
# built-in sqlite store; the example plug-in (``example_plugins/json_checkpoints.py``), which the CLI
# finds through a real entry point; AWS (DynamoDB checkpoints, S3 landing, both on moto's server);
# self-hosted PostgreSQL checkpoints.
StoreSetup = Callable[[Path, Servers], tuple[dict[str, Any], dict[str, str]]]


def _aws(tmp: Path, servers: Servers) -> tuple[dict[str, Any], dict[str, str]]:
    import boto3

    url, run = servers.moto.url, uuid.uuid4().hex[:12]
    boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket=f"logs-{run}")
    return ({"checkpoints": {"type": "dynamodb", "table": f"cp_{run}", "region": "us-east-1", "endpoint_url": url,
                             "create_table": True},
             "landing": {"type": "s3", "bucket": f"logs-{run}", "prefix": "landing", "region": "us-east-1",
                         "endpoint_url": url}},
            dict(AWS_ENV))


def _postgres(tmp: Path, servers: Servers) -> tuple[dict[str, Any], dict[str, str]]:
    return ({"checkpoints": {"type": "postgres", "dsn": {"env": "LOGPULL_PG_DSN"}}},
            {"LOGPULL_PG_DSN": servers.postgres.new_database("cp")})


STORES: dict[str, StoreSetup] = {
    "sqlite": lambda tmp, _: ({"checkpoints": {"type": "sqlite", "path": "state/checkpoints.db"}}, {}),
    "json_file": lambda tmp, _: ({"checkpoints": {"type": "json_file", "path": "state/checkpoints.json"}}, {}),
    "dynamodb": _aws,
    "postgres": _postgres,
}


def plugin_path(tmp_path: Path) -> str:
    """A folder holding a dist-info with an entry point for the example plug-ins, as pip would leave it."""
    site = tmp_path / "site"
    dist = site / "logpull_examples-0.1.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: logpull-examples\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[logpull_dagster.plugins]\ncounter = logpull_dagster_tests.example_plugins.counter_api\n"
        "json_file = logpull_dagster_tests.example_plugins.json_checkpoints\n"
        "spool = logpull_dagster_tests.example_plugins.spool_sink\n")
    return os.pathsep.join([str(site), str(REPO)])


# The sources the real-CLI tests read, by name (the asset is ``logs/<name>``): the keys of each in the
# config, the simulator's stream and emulated API it reads, and how its SIEM event id is made of the
# simulator's ground-truth id.
SOURCES: dict[str, dict[str, Any]] = {
    "gws": {"type": "google_workspace", "application": "login", "access_token": {"env": "LOGPULL_TEST_TOKEN"}},
    "okta": {"type": "okta", "token": {"env": "LOGPULL_TEST_TOKEN"}},
    # GitHub's default rate_limit (1750/hour, one request every 2 s) is GitHub's quota, not the simulator's
    "gh": {"type": "github", "enterprise": "acme", "token": {"env": "LOGPULL_TEST_TOKEN"}, "rate_limit": None},
    # Slack's default rate_limit is its Tier 3 (50/min, one request every 1.2 s): raised here so that a
    # test window of several pages takes milliseconds; test_slack.py tests the default itself.
    "slack": {"type": "slack", "token": {"env": "LOGPULL_TEST_TOKEN"}, "rate_limit": "6000/min"},
    # Okta's System Log re-expressed declaratively (``type: rest``): the proof that the declarative source
    # reads an API as well as its coded module. Its page size is ``params.limit`` (``rest_params``).
    "okta_rest": {
        "type": "rest", "path": "/api/v1/logs",
        "auth": {"type": "header", "name": "Authorization", "prefix": "SSWS ", "token": {"env": "LOGPULL_TEST_TOKEN"}},
        "params": {"limit": 1000, "sortOrder": "ASCENDING"},
        "window": {"start_param": "since", "end_param": "until", "format": "iso8601_ms", "end_inclusive": True},
        "records": "", "paginator": {"type": "link_header"}, "event_id": "uuid", "event_time": "published",
        "order": "ascending", "rate_limit_reset_header": "X-Rate-Limit-Reset",
    },
    # The token endpoint on the simulator too (login_url: SIM_URL, replaced by its URL); TOKEN is any client's
    # secret there. No rate_limit in tests: Graph's default (25/min) would space requests 2.4 s apart.
    "msgraph": {"type": "msgraph", "stream": "directory_audits", "tenant_id": "00000000-0000-0000-0000-000000000000",
                "client_id": "11111111-1111-1111-1111-111111111111", "client_secret": {"env": "LOGPULL_TEST_TOKEN"},
                "login_url": "SIM_URL", "rate_limit": None},
}
SIM_URL = "SIM_URL"  # a key's value that stands for the simulator's URL


def source_keys(source: str, url: str) -> dict[str, Any]:
    """The config keys of ``source`` (a key of SOURCES) for a simulator at ``url``."""
    return {k: url if v == SIM_URL else v for k, v in SOURCES[source].items()}


def page_size_keys(source: str, page_size: int) -> dict[str, Any]:
    """The config keys that set a source's page size: ``page_size``, a ``rest`` source's limit parameter, or
    none for GitHub (its source always asks for GitHub's maximum, 100)."""
    if SOURCES[source]["type"] == "rest":
        return {"params": {**SOURCES[source]["params"], "limit": page_size}}
    if SOURCES[source]["type"] == "github":
        return {}
    return {"page_size": page_size}


def setup_project(tmp_path: Path, url: str, *, executor: str | None = None, store: str = "sqlite",
                  servers: Servers | None = None, dagster_yaml: str | None = None, source: str = "gws",
                  also: tuple[str, ...] = (), **overrides: Any) -> dict[str, str]:
    """Write a config for one source ``source`` (a key of SOURCES, ``gws`` by default; ``overrides``: its
    keys; ``also``: more sources of SOURCES, each with the same overrides; ``executor``: the top-level key;
    ``store``: a key of STORES, whose servers come from ``servers``) and a DAGSTER_HOME (``dagster_yaml``:
    its dagster.yaml, default SQLite storage); return the environment to run in."""
    page_size = overrides.pop("page_size", None)
    srcs = []
    for name in (source, *also):
        sized = page_size_keys(name, page_size) if page_size is not None else {}
        srcs.append({"name": name, **source_keys(name, url), "base_url": url, "start": ts(-24),
                     "http_backoff_max": "100ms", "retry_delay": "0s", **sized, **overrides})
    stores, store_env = STORES[store](tmp_path, servers)  # type: ignore[arg-type]
    cfg = {"sources": srcs, "checkpoints": stores["checkpoints"],
           "landing": stores.get("landing", {"type": "local", "path": "state/landing"}),
           "siem": {"type": "file", "path": "siem"}}
    if executor is not None:
        cfg["executor"] = executor
    (tmp_path / "logpull.yaml").write_text(yaml.safe_dump(cfg))
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text(dagster_yaml or "telemetry:\n  enabled: false\n")
    # Create the instance's storage once: two CLI processes racing to create it on a fresh
    # DAGSTER_HOME fail with "table runs already exists" (dagster dev does this step for you).
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs(limit=1)
    return {**os.environ, **store_env, "LOGPULL_CONFIG": str(tmp_path / "logpull.yaml"), "DAGSTER_HOME": str(home),
            "LOGPULL_TEST_TOKEN": TOKEN, "PYTHONPATH": plugin_path(tmp_path)}


def logpull(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The real ``logpull`` console script, as an operator runs it."""
    return subprocess.run([str(Path(sys.executable).with_name("logpull")), *args], env=env, capture_output=True,
                          text=True, timeout=120)


def materialize_cmd(asset: str, key: str) -> list[str]:
    return [DAGSTER, "asset", "materialize", "-m", "logpull_dagster", "--select", asset, "--partition", key]


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "ab")  # noqa: SIM115 - handed to the child
    # Own session, so a SIGKILL of the group takes the CLI and anything it started.
    return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def run(cmd: list[str], env: dict[str, str], log: Path, timeout: float = 180) -> int:
    return start(cmd, env, log).wait(timeout=timeout)


def siem_ids(tmp_path: Path) -> list[str]:
    return [orjson.loads(line)["event_id"] for f in sorted((tmp_path / "siem").rglob("*.jsonl"))
            for line in f.read_bytes().splitlines()]


def rest_source(source: str, base_url: str, *, token: str = TOKEN, page_size: int = 50, **kw: Any) -> Any:
    """The ``RestSource`` a ``type: rest`` entry of SOURCES opens (its credential ``token``, its ``limit``
    ``page_size``), outside Dagster: for the suites that build a source by hand. ``kw``: RestSource's own
    keyword arguments (timeouts, retries, TLS)."""
    from pydantic import TypeAdapter

    from logpull_dagster.sources.rest import AuthConfig, RestApi, RestSource, open_auth

    desc = {k: v for k, v in SOURCES[source].items() if k not in ("type", "auth")}
    api = RestApi.model_validate({**desc, **page_size_keys(source, page_size)})
    auth, credential = open_auth(TypeAdapter(AuthConfig).validate_python(SOURCES[source]["auth"]), lambda _: token)
    kw.setdefault("credential", credential)
    return RestSource(api, base_url=base_url, auth=auth, **kw)
