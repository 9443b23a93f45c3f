"""Bounds an adversary found open (issue 24): a throttled answer whose reset lies in the past, credentials
in a URL key, and config values outside any sensible range (a start in year 1, `page_size: true`, a lease
of 1 ms or ten years). Times are built from now: the retention bounds move with the calendar."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from logpull_dagster.config import ConfigError, StartBeforeRetentionWarning, load_config, parse_config
from logpull_dagster.sources.http import RetryingClient
from logpull_dagster.sources.okta import okta_wait
from logpull_dagster.sources.rest import rest_wait

PASSWORD = "hunter2-s3cr3t"
STORES = {"checkpoints": {"type": "sqlite", "path": "state/cp.db"}, "landing": {"type": "local", "path": "state/l"},
          "siem": {"type": "file", "path": "siem"}}


def hours_ago(hours: float) -> str:
    """A whole UTC hour ``hours`` before now, RFC 3339 (a valid hourly ``start``)."""
    now = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    return (now - dt.timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


def days_ago(days: float) -> str:
    return hours_ago(24 * days)


SOURCES: dict[str, dict[str, Any]] = {
    "google_workspace": {"application": "login", "access_token": {"env": "GWS_TOKEN"}},
    "okta": {"base_url": "https://acme.okta.com", "token": {"env": "OKTA_TOKEN"}},
    "github": {"enterprise": "acme", "token": {"env": "GH_TOKEN"}},
    "slack": {"token": {"env": "SLACK_TOKEN"}},
    "msgraph": {"stream": "directory_audits", "tenant_id": "00000000-0000-0000-0000-000000000000",
                "client_id": "11111111-1111-1111-1111-111111111111", "client_secret": {"env": "GRAPH_SECRET"}},
    "rest": {"base_url": "https://api.example.com", "path": "/logs",
             "auth": {"type": "header", "name": "Authorization", "token": {"env": "REST_TOKEN"}},
             "window": {"start_param": "since", "end_param": "until", "format": "iso8601", "end_inclusive": True},
             "records": "items", "paginator": {"type": "link_header"}, "event_id": "id", "event_time": "time",
             "order": "ascending"},
}


def config(kind: str = "google_workspace", **keys: Any) -> dict[str, Any]:
    src = {"name": "src", "type": kind, "start": hours_ago(24), **SOURCES[kind], **keys}
    return {"sources": [src], **STORES}


def load(tmp_path: Path, doc: dict[str, Any]) -> Any:
    path = tmp_path / "logpull.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_config(path)


def refused(tmp_path: Path, doc: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, doc)
    return str(e.value)


def loads_quietly(tmp_path: Path, doc: dict[str, Any]) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("error", StartBeforeRetentionWarning)
        return load(tmp_path, doc)


# ---- a rate-limit reset in the past waits the backoff, as a missing one does --------------------------

class _Throttled:
    """Answers ``throttled`` 429s carrying ``reset`` as the reset header, then 200; records arrival times."""

    def __init__(self, reset: str, throttled: int) -> None:
        self.reset, self.left, self.arrivals = reset, throttled, []  # type: ignore[var-annotated]
        self.lock = threading.Lock()

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        with self.lock:
            self.arrivals.append(time.monotonic())
            throttled, self.left = self.left > 0, self.left - 1
        body = b'{"ok": true}'
        h.send_response(429 if throttled else 200)  # also sends Date, which the hook counts from
        if throttled:
            h.send_header("X-Rate-Limit-Reset", self.reset)
            h.send_header("X-Rate-Limit-Remaining", "0")
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)


def _serve(app: _Throttled) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            app.handle(self)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("when", ["epoch_0", "a_day_into_1970", "an_hour_ago"])
@pytest.mark.parametrize("hook", ["okta", "rest"])
def test_a_reset_in_the_past_waits_the_backoff_not_zero(when: str, hook: str) -> None:
    reset = {"epoch_0": "0", "a_day_into_1970": "86400", "an_hour_ago": str(int(time.time()) - 3600)}[when]
    app = _Throttled(reset, throttled=3)
    for url in _serve(app):
        wait = okta_wait() if hook == "okta" else rest_wait("X-Rate-Limit-Reset")
        client = RetryingClient(url, timeout=5.0, attempts=4, backoff_initial=0.1, backoff_max=5.0,
                                rate_limit_wait=wait)
        try:
            res = client.get("/logs")
        finally:
            client.close()
        assert res.status == 200 and res.retries == 3 and res.reasons == ["HTTP 429"] * 3
        gaps = [b - a for a, b in zip(app.arrivals, app.arrivals[1:], strict=False)]
        # the backoff's waits: 0.1 * 2**(n-1) plus jitter, so at least 0.1, 0.2, 0.4 s (0 s apart before)
        assert all(g >= 0.1 * 2 ** i - 0.01 for i, g in enumerate(gaps)), gaps


# ---- URL keys never hold credentials; a base_url holds no query --------------------------------------

def _with(doc: dict[str, Any], where: str, value: str) -> dict[str, Any]:
    """``doc`` with ``value`` at the dotted path ``where`` (``sources.0.base_url``)."""
    node: Any = doc
    *parents, last = where.split(".")
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[last] = value
    return doc


URL_KEYS = [
    ("google_workspace", "sources.0.base_url", r"sources\[0\] \(src\)\.base_url"),
    ("okta", "sources.0.base_url", r"sources\[0\] \(src\)\.base_url"),
    ("msgraph", "sources.0.login_url", r"sources\[0\] \(src\)\.login_url"),
    ("rest", "sources.0.base_url", r"sources\[0\] \(src\)\.base_url"),
]


@pytest.mark.parametrize(("kind", "where", "key"), URL_KEYS)
@pytest.mark.parametrize("userinfo", [f"admin:{PASSWORD}@", "admin@", f":{PASSWORD}@"])
def test_credentials_in_a_source_url_are_refused_naming_the_key_never_the_password(
        tmp_path: Path, kind: str, where: str, key: str, userinfo: str) -> None:
    msg = refused(tmp_path, _with(config(kind), where, f"https://{userinfo}api.example.com"))
    assert PASSWORD not in msg
    assert re.search(key + r".*user name or password.*\{env: NAME\}", msg), msg


def test_credentials_in_any_other_url_key_are_refused(tmp_path: Path) -> None:
    url = f"https://admin:{PASSWORD}@host.example.com"
    cases: list[tuple[dict[str, Any], str]] = [
        (config("okta", token=None, oauth={"client_id": "c", "private_key": {"env": "K"}, "token_url": url}),
         "oauth.token_url"),
        (config("google_workspace", access_token=None, service_account={"email": "sa@p.iam.gserviceaccount.com",
                                                                         "subject": "a@example.com",
                                                                         "iam_endpoint": url}), "iam_endpoint"),
        ({**config(), "sinks": {"hec": {"type": "splunk_hec", "url": url, "token": {"env": "HEC"}}}}, "hec"),
        ({**config(), "landing": {"type": "s3", "bucket": "b", "endpoint_url": url}}, "endpoint_url"),
        ({**config(), "checkpoints": {"type": "dynamodb", "table": "t", "endpoint_url": url}}, "endpoint_url"),
    ]
    for doc, key in cases:
        msg = refused(tmp_path, doc)
        assert PASSWORD not in msg and key in msg and "user name or password" in msg, msg


def test_a_query_in_a_base_url_is_refused_and_a_token_endpoint_may_carry_one(tmp_path: Path) -> None:
    msg = refused(tmp_path, config("okta", base_url="https://acme.okta.com?token=abc"))
    assert "base_url: holds a query" in msg and "abc" not in msg, msg
    msg = refused(tmp_path, config("rest", base_url="https://api.example.com/v1#frag"))
    assert "base_url: holds a fragment" in msg, msg
    # RFC 6749 3.2: a token endpoint's URI may include a query; it is requested as given
    doc = config("okta", token=None, oauth={"client_id": "c", "private_key": {"env": "K"},
                                            "token_url": "https://acme.okta.com/oauth2/v1/token?tenant=a"})
    assert load(tmp_path, doc).sources[0].oauth.token_url.endswith("?tenant=a")


@pytest.mark.slow
def test_the_real_cli_refuses_a_password_in_base_url_without_printing_it(tmp_path: Path) -> None:
    doc = config("okta", base_url=f"https://admin:{PASSWORD}@acme.okta.com")
    (tmp_path / "logpull.yaml").write_text(yaml.safe_dump(doc))
    env = {**os.environ, "LOGPULL_CONFIG": str(tmp_path / "logpull.yaml"), "DAGSTER_HOME": str(tmp_path)}
    done = subprocess.run([str(Path(sys.executable).with_name("logpull")), "status"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done
    assert "sources[0] (src).base_url: holds a user name or password" in done.stderr + done.stdout, done
    assert PASSWORD not in done.stderr + done.stdout


# ---- numbers are numbers; durations have a documented range ------------------------------------------

@pytest.mark.parametrize("key", ["page_size", "retries", "http_attempts", "max_page_bytes", "concurrent_windows"])
def test_a_yes_no_value_is_not_a_number(tmp_path: Path, key: str) -> None:
    msg = refused(tmp_path, config(**{key: True}))
    assert f"sources[0] (src).{key}: true is a yes/no value, not a number" in msg, msg


@pytest.mark.parametrize(("key", "value", "message"), [
    ("lease_ttl", "1ms", r"lease_ttl: 1ms is shorter than 1s, the shortest allowed: a live run renews"),
    ("lease_ttl", "3650d", r"lease_ttl: 3650d is longer than 1h, the longest allowed: a run that dies"),
    ("lease_ttl", "61m", r"lease_ttl: 61m is longer than 1h"),
    ("http_timeout", "3650d", r"http_timeout: 3650d is longer than 10m, the longest allowed: a server"),
    ("http_timeout", "500ms", r"http_timeout: 500ms is shorter than 1s"),
    ("time_budget", "1ms", r"time_budget: 1ms is shorter than 100ms, the shortest allowed"),
    ("time_budget", "25h", r"time_budget: 25h is longer than 1d"),
    ("lease_wait", "3650d", r"lease_wait: 3650d is longer than 1h, the longest allowed: a dead holder's lease"),
    ("retry_delay", "2h", r"retry_delay: 2h is longer than 1h, the longest allowed: the first of retries"),
    ("http_backoff_max", "3650d", r"http_backoff_max: 3650d is longer than 10m, the longest allowed: one request"),
    ("http_backoff_max", "1ms", r"http_backoff_max: 1ms is shorter than 10ms, the shortest allowed: shorter, the "
                                r"retries of one request come back to back"),
])
def test_durations_outside_their_range_are_refused_with_the_reason(tmp_path: Path, key: str, value: str,
                                                                  message: str) -> None:
    msg = refused(tmp_path, config(**{key: value}))
    assert re.search(r"sources\[0\] \(src\)\." + message, msg), msg


def test_the_ends_of_each_range_are_accepted(tmp_path: Path) -> None:
    for keys in ({"lease_ttl": "1s", "http_timeout": "1s", "time_budget": "100ms", "lease_wait": "0s",
                  "retry_delay": "0s", "http_backoff_max": "10ms"},
                 {"lease_ttl": "1h", "http_timeout": "10m", "time_budget": "24h", "lease_wait": "1h",
                  "retry_delay": "1h", "http_backoff_max": "10m"}):
        load(tmp_path, config(**keys))


def test_a_sink_lease_ttl_has_the_same_range(tmp_path: Path) -> None:
    doc = {**config(), "sinks": {"siem": {"type": "file", "path": "siem", "lease_ttl": "1ms"}}}
    del doc["siem"]
    assert "sinks.siem.lease_ttl: 1ms is shorter than 1s" in refused(tmp_path, doc)
    doc["sinks"]["siem"]["lease_ttl"] = "2h"
    assert "sinks.siem.lease_ttl: 2h is longer than 1h" in refused(tmp_path, doc)


def test_a_sink_lease_wait_and_retry_delay_have_the_stream_s_ranges(tmp_path: Path) -> None:
    for key in ("lease_wait", "retry_delay"):
        doc = {**config(), "sinks": {"siem": {"type": "file", "path": "siem", key: "3650d"}}}
        assert f"sinks.siem.{key}: 3650d is longer than 1h, the longest allowed" in refused(tmp_path, doc)


# ---- start: a hard floor (error) and the API's retention (warning) ------------------------------------

@pytest.mark.parametrize("start", ["0001-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "1999-12-31T23:00:00Z"])
def test_a_start_before_2000_is_refused_with_the_reason(tmp_path: Path, start: str) -> None:
    msg = refused(tmp_path, config(start=start))
    assert "sources[0] (src).start: " in msg and "is before 2000-01-01T00:00:00Z: no audit log API keeps" in msg, msg


@pytest.mark.slow
def test_the_real_cli_refuses_start_year_one_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "logpull.yaml").write_text(yaml.safe_dump(config(start="0001-01-01T00:00:00Z")))
    env = {**os.environ, "LOGPULL_CONFIG": str(tmp_path / "logpull.yaml"), "DAGSTER_HOME": str(tmp_path)}
    t0 = time.monotonic()
    done = subprocess.run([str(Path(sys.executable).with_name("logpull")), "status"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and time.monotonic() - t0 < 60, done
    assert "sources[0] (src).start: 0001-01-01T00:00:00Z is before 2000-01-01T00:00:00Z" in done.stderr, done.stderr


# Days before now (built in the test, so that collection is the same on every worker), or a fixed time
# where the bound is a fixed date (Slack).
@pytest.mark.parametrize(("kind", "old", "recent"), [
    ("okta", 400, 30),
    ("okta", 91, 89),
    ("google_workspace", 181, 179),
    ("github", 200, 170),
    ("msgraph", 31, 29),
    ("slack", "2018-02-28T00:00:00Z", "2018-03-01T00:00:00Z"),
])
def test_a_start_before_the_api_s_retention_loads_with_a_warning(tmp_path: Path, kind: str, old: int | str,
                                                                 recent: int | str) -> None:
    too_old = old if isinstance(old, str) else days_ago(old)
    kept = recent if isinstance(recent, str) else days_ago(recent)
    loads_quietly(tmp_path, config(kind, start=kept))
    with pytest.warns(StartBeforeRetentionWarning, match=rf"source 'src': start {too_old} is before what its API "
                                                         rf"\({kind}\) still holds") as seen:
        cfg = load(tmp_path, config(kind, start=too_old))
    assert cfg.sources[0].start.strftime("%Y-%m-%dT%H:%M:%SZ") == too_old  # kept as written: not clamped
    assert len(seen) == 1


def test_a_type_without_a_known_retention_never_warns(tmp_path: Path) -> None:
    loads_quietly(tmp_path, config("rest", start="2001-01-01T00:00:00Z"))


def test_several_streams_of_one_source_warn_once(tmp_path: Path) -> None:
    doc = config(start=days_ago(365), application=None, applications=["login", "admin", "drive"])
    with pytest.warns(StartBeforeRetentionWarning) as seen:
        cfg = load(tmp_path, doc)
    assert len(cfg.sources) == 3 and len([w for w in seen if w.category is StartBeforeRetentionWarning]) == 1


def test_a_resource_re_validating_its_config_does_not_warn_again(tmp_path: Path) -> None:
    # The runs re-validate each source's model from its JSON (resources.py): the retention check belongs to
    # loading only, so a source that loaded with a warning never fails or warns there.
    with pytest.warns(StartBeforeRetentionWarning):
        cfg = parse_config(config("okta", start=days_ago(120)), base_dir=str(tmp_path))
    src = cfg.sources[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        type(src).model_validate(src.model_dump(mode="json"))
