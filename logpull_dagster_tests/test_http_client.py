"""RetryingClient's next links, rate-limit waits and auth objects, against a real local HTTP server.

The server (``App``) records every request it gets, so "refused before any request" and "never sent
the credential there" are checked on the wire, not on our own bookkeeping.
"""

from __future__ import annotations

import email.utils
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from logpull_dagster.sources import CredentialsRefused, SourceRequestError
from logpull_dagster.sources.auth import BearerAuth, OAuthClientCredentials, SswsAuth, TokenRefused
from logpull_dagster.sources.http import (
    RetryableStatus,
    RetryingClient,
    describe,
    first_of,
    reset_epoch,
    retry_after,
    server_date,
)

CLIENT_ID, CLIENT_SECRET = "logpull-client", "csecret-0123456789"
API_TOKEN = "api-token-abcdef123"


@dataclass
class Seen:
    method: str
    target: str  # path and query, as received
    headers: dict[str, str]
    form: dict[str, str] = field(default_factory=dict)


class App:
    """Pages with absolute next links, throttled endpoints, an OAuth token endpoint and an API that
    accepts only the token it issued last."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.seen: list[Seen] = []
        self.url = ""
        # token endpoint
        self.tokens_issued = 0
        self.valid_token: str | None = None
        self.expires_in: Any = 300
        self.token_mode = "ok"  # ok | 503 | huge | slow | no_token
        # throttled endpoints: how many throttled answers are left, and how
        self.throttled_left = 0
        self.reset_in = 2
        self.retry_after = "0"
        self.api_refuses_all = False

    def requests(self, prefix: str = "") -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.target.startswith(prefix)]

    def revoke(self) -> None:
        with self.lock:
            self.valid_token = None

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("content-length") or 0)
        raw = h.rfile.read(length) if length else b""
        form = {k: v[0] for k, v in parse_qs(raw.decode()).items()} if raw else {}
        with self.lock:
            self.seen.append(Seen(h.command, h.path, dict(h.headers.items()), form))
        path = urlsplit(h.path).path
        if path == "/token" and h.command == "POST":
            return self._token(h, form)
        if path.startswith("/pages/"):
            n = int(path.rsplit("/", 1)[1])
            link = {"Link": f'<{self.url}/pages/{n + 1}?after=c%2F{n}&limit=2>; rel="next"'} if n < 3 else {}
            return _send(h, 200, {"n": n}, link)
        if path == "/limited":
            return self._throttled(h, 429, {"X-Rate-Limit-Reset": str(int(time.time()) + self.reset_in),
                                            "Retry-After": self.retry_after, "X-Rate-Limit-Remaining": "0"})
        if path == "/github":
            return self._throttled(h, 403, {"x-ratelimit-reset": str(int(time.time()) + self.reset_in),
                                            "x-ratelimit-remaining": "0"})
        if path == "/forbidden":
            return _send(h, 403, {"message": "no"}, {"x-ratelimit-reset": str(int(time.time()) + 60),
                                                      "x-ratelimit-remaining": "4999"})
        if path == "/api":
            with self.lock:
                ok = not self.api_refuses_all and self.valid_token is not None \
                    and h.headers.get("authorization") == f"Bearer {self.valid_token}"
            return _send(h, 200, {"ok": True}) if ok else _send(h, 401, {"error": "invalid_token"})
        return _send(h, 200, {"ok": True})

    def _throttled(self, h: BaseHTTPRequestHandler, status: int, headers: dict[str, str]) -> None:
        with self.lock:
            throttled = self.throttled_left > 0
            self.throttled_left -= throttled
        if throttled:
            return _send(h, status, {"error": "rate limited"}, headers)
        return _send(h, 200, {"ok": True}, {"X-Rate-Limit-Remaining": "42"})

    def _token(self, h: BaseHTTPRequestHandler, form: dict[str, str]) -> None:
        if self.token_mode == "slow":
            self.stop.wait(5)
            return _send(h, 503, {})
        if self.token_mode == "503":
            return _send(h, 503, {"error": "temporarily_unavailable"}, {"Retry-After": "0"})
        if self.token_mode == "huge":
            return _send(h, 200, {"access_token": "x" * 200_000, "token_type": "Bearer"})
        if form.get("grant_type") != "client_credentials":
            return _send(h, 400, {"error": "unsupported_grant_type"})
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
            # A hostile (or careless) server echoing what it was sent: the message must not repeat it.
            return _send(h, 401, {"error": "invalid_client",
                                  "error_description": f"client secret {form.get('client_secret')} is not valid"})
        if self.token_mode == "no_token":
            return _send(h, 200, {"token_type": "Bearer"})
        with self.lock:
            self.tokens_issued += 1
            self.valid_token = f"access-token-{self.tokens_issued:04d}"
            token = self.valid_token
        return _send(h, 200, {"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in,
                              "scope": form.get("scope", "")})


def _send(h: BaseHTTPRequestHandler, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
    body = json.dumps(doc).encode()
    h.send_response(status)  # also sends Date, which reset_epoch counts from
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def _serve(host: str) -> Iterator[App]:
    app = App()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            app.handle(self)

        do_POST = do_GET

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            # The tests cut connections on purpose (deadlines): not errors. Anything else still shows.
            if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
                super().handle_error(request, client_address)

    server = Server((host, 0), Handler)
    app.url = f"http://{host}:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield app
    finally:
        app.stop.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def api() -> Iterator[App]:
    yield from _serve("127.0.0.1")


@pytest.fixture
def other() -> Iterator[App]:
    yield from _serve("127.0.0.1")


@pytest.fixture
def other_host() -> Iterator[App]:
    yield from _serve("127.0.0.2")


@pytest.fixture
def make_client() -> Iterator[Callable[..., RetryingClient]]:
    clients: list[RetryingClient] = []

    def make(base_url: str, **kw: Any) -> RetryingClient:
        kw = {"timeout": 3.0, "attempts": 3, "backoff_initial": 0.01, "backoff_max": 0.05, **kw}
        client = RetryingClient(base_url, {"Accept": "application/json"}, **kw)
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()


def _next_link(headers: httpx.Headers) -> str | None:
    link = headers.get("link")
    return link.split(";")[0].strip("<> ") if link else None


# ---- absolute next URLs, on the configured origin only ----------------------------------------------

def test_absolute_next_links_on_the_origin_are_followed_as_given(api: App, make_client: Any) -> None:
    client = make_client(api.url, auth=BearerAuth(API_TOKEN))
    res = client.get("/pages/1", {"limit": 2})
    pages, url = [json.loads(res.content)["n"]], _next_link(res.headers)
    while url:
        assert url.startswith("http://127.0.0.1:")
        res = client.get(url, {"limit": 2})  # already in the link: not sent twice
        pages.append(json.loads(res.content)["n"])
        url = _next_link(res.headers)
    assert pages == [1, 2, 3]
    assert [s.target for s in api.requests("/pages")] == [
        "/pages/1?limit=2", "/pages/2?after=c%2F1&limit=2", "/pages/3?after=c%2F2&limit=2"]
    assert all(s.headers["Authorization"] == f"Bearer {API_TOKEN}" for s in api.requests())


def test_params_missing_from_a_next_link_are_added_and_the_link_kept_verbatim(api: App, make_client: Any) -> None:
    client = make_client(api.url)
    client.get(f"{api.url}/any?$filter=a%20eq%20%27b%27&$skiptoken=x%2By", {})
    client.get(f"{api.url}/any?after=1&limit=2", {"limit": 5, "extra": "y z"})
    assert [s.target for s in api.requests("/any")] == [
        "/any?$filter=a%20eq%20%27b%27&$skiptoken=x%2By", "/any?after=1&limit=2&extra=y+z"]


def test_an_explicit_default_port_is_the_same_origin(make_client: Any) -> None:
    client = make_client("http://127.0.0.1", attempts=1, timeout=1.0)
    try:
        client.get("http://127.0.0.1:80/any")
    except SourceRequestError as e:  # whatever port 80 holds here, the URL was not refused as foreign
        assert "origin" not in str(e), e
    except httpx.TransportError:
        pass  # nothing listens on port 80: the request was made, so the origin was accepted
    with pytest.raises(SourceRequestError, match="origin"):
        client.get("http://127.0.0.1:8080/any")


@pytest.mark.parametrize("case", ["other port", "other scheme", "other address", "other name"])
def test_a_next_link_to_another_origin_is_refused_before_any_request(
        case: str, api: App, other: App, other_host: App, make_client: Any) -> None:
    port = api.url.rsplit(":", 1)[1]
    foreign = {
        "other port": f"{other.url}/any",
        "other scheme": f"https://127.0.0.1:{port}/any",
        "other address": f"{other_host.url}/any",
        "other name": f"http://localhost:{port}/any",  # the same socket as base_url: refused by name
    }[case] + "?after=c1&token=query-secret-42"
    client = make_client(api.url, auth=BearerAuth(API_TOKEN))
    with pytest.raises(SourceRequestError) as e:
        client.get(foreign, {})
    message = str(e.value)
    assert e.value.permanent
    assert foreign.split("/any")[0] in message and f"http://127.0.0.1:{port}" in message
    assert "query-secret-42" not in message and "after=" not in message and API_TOKEN not in message
    assert api.requests() == other.requests() == other_host.requests() == []


@pytest.mark.parametrize("url", ["//127.0.0.2/any", "ftp://127.0.0.1/any", "mailto:someone"])
def test_a_link_that_is_neither_a_path_nor_an_http_url_is_refused(url: str, api: App, make_client: Any) -> None:
    with pytest.raises(SourceRequestError):
        make_client(api.url).get(url)
    assert api.requests() == []


def test_a_same_origin_link_with_user_info_is_refused(api: App, make_client: Any) -> None:
    host = api.url.removeprefix("http://")
    with pytest.raises(SourceRequestError, match="user info") as e:
        make_client(api.url).get(f"http://user:pw-secret-99@{host}/any")
    assert "pw-secret-99" not in str(e.value) and api.requests() == []


# ---- rate-limit waits computed by the source --------------------------------------------------------

def test_reset_epoch_counts_from_the_server_date_when_it_has_one() -> None:
    hook = reset_epoch("X-Rate-Limit-Reset")
    reset = 1_900_000_000
    assert hook(429, httpx.Headers({"X-Rate-Limit-Reset": str(reset)}), reset - 10.0) == 10.0
    date = email.utils.formatdate(reset - 5, usegmt=True)
    # our clock 100 s behind the server's: the server's own Date decides
    assert hook(429, httpx.Headers({"X-Rate-Limit-Reset": str(reset), "Date": date}), reset - 100.0) == 5.0
    # a reset already past is no answer (the client's backoff), never a retry 0 s later (issue 24)
    assert hook(429, httpx.Headers({"X-Rate-Limit-Reset": str(reset)}), reset + 3.0) is None
    assert hook(429, httpx.Headers({"X-Rate-Limit-Reset": "soon"}), 0.0) is None
    assert hook(429, httpx.Headers({}), 0.0) is None
    assert hook(403, httpx.Headers({"X-Rate-Limit-Reset": str(reset)}), reset - 1.0) is None


def test_a_retry_after_date_counts_from_the_server_date_when_it_has_one() -> None:
    hook = retry_after()
    at = 1_900_000_000
    when = {"Retry-After": email.utils.formatdate(at, usegmt=True)}
    assert hook(503, httpx.Headers(when), at - 10.0) == 10.0
    # our clock 25 minutes fast: counted from it, the wait would be none at all (a retry storm)
    dated = {**when, "Date": email.utils.formatdate(at - 20, usegmt=True)}
    assert hook(503, httpx.Headers(dated), at + 1500.0) == 20.0
    assert hook(429, httpx.Headers({**dated, "Retry-After": "7"}), at + 1500.0) == 7.0  # delta-seconds: as said


def test_server_date_reads_the_date_header_or_nothing() -> None:
    at = 1_900_000_000
    assert server_date(httpx.Headers({"Date": email.utils.formatdate(at, usegmt=True)})) == at
    assert server_date(httpx.Headers({"date": "Sun, 06 Nov 1994 08:49:37 GMT"})) == 784111777
    for bad in ({}, {"Date": ""}, {"Date": "yesterday"}, {"Date": "Sun, 06 Nov 1994 08:49:37 -0000"},
                {"Date": "Sun, 06 Nov 99999 08:49:37 GMT"}):
        assert server_date(httpx.Headers(bad)) is None, bad


def test_a_response_carries_the_server_s_clock(api: App, make_client: Any) -> None:
    before = int(time.time())
    res = make_client(api.url).get("/any")
    assert res.server_time is not None and before <= res.server_time <= time.time()


def test_github_style_hooks_call_an_exhausted_403_a_rate_limit_and_any_other_403_a_refusal() -> None:
    hook = first_of(retry_after(), reset_epoch("x-ratelimit-reset", remaining="x-ratelimit-remaining"))
    reset = 1_900_000_000
    exhausted = httpx.Headers({"x-ratelimit-reset": str(reset), "x-ratelimit-remaining": "0"})
    assert hook(403, exhausted, reset - 30.0) == 30.0
    assert hook(403, httpx.Headers({"x-ratelimit-reset": str(reset), "x-ratelimit-remaining": "12"}), 0.0) is None
    assert hook(429, httpx.Headers({"retry-after": "7", **exhausted}), reset - 30.0) == 7.0
    assert retry_after()(403, httpx.Headers({"retry-after": "7"}), 0.0) is None


def test_the_reset_header_wait_is_honoured(api: App, make_client: Any) -> None:
    api.throttled_left, api.reset_in, api.retry_after = 1, 2, "0"
    client = make_client(api.url, backoff_max=10.0, rate_limit_wait=reset_epoch("X-Rate-Limit-Reset"))
    t0 = time.monotonic()
    res = client.get("/limited")
    elapsed = time.monotonic() - t0
    # reset is 2 s after the server's whole second: 1 to 2 s from the Date it sent; Retry-After (0) ignored
    assert 0.9 <= elapsed < 5.0, elapsed
    assert res.status == 200 and res.retries == 1 and res.reasons == ["HTTP 429"]
    assert res.headers["X-Rate-Limit-Remaining"] == "42"


def test_the_reset_header_wait_is_capped_at_backoff_max(api: App, make_client: Any) -> None:
    api.throttled_left, api.reset_in = 1, 3600
    client = make_client(api.url, backoff_max=0.3, rate_limit_wait=reset_epoch("X-Rate-Limit-Reset"))
    t0 = time.monotonic()
    res = client.get("/limited")
    elapsed = time.monotonic() - t0
    assert 0.25 <= elapsed < 3.0, elapsed
    assert res.status == 200 and res.retries == 1


def test_a_wait_past_the_deadline_ends_the_retries_at_once(api: App, make_client: Any) -> None:
    api.throttled_left, api.reset_in = 5, 30
    client = make_client(api.url, backoff_max=120.0, rate_limit_wait=reset_epoch("X-Rate-Limit-Reset"))
    t0 = time.monotonic()
    with pytest.raises(RetryableStatus) as e:
        client.get("/limited", deadline=time.monotonic() + 2.0)
    assert time.monotonic() - t0 < 1.5
    assert e.value.status == 429 and len(api.requests("/limited")) == 1 and client.last_attempts == 1


def test_the_default_retry_after_wait_does_not_run_past_the_deadline_either(api: App, make_client: Any) -> None:
    api.throttled_left, api.retry_after = 5, "30"
    client = make_client(api.url, backoff_max=0.05)
    t0 = time.monotonic()
    with pytest.raises(RetryableStatus):
        client.get("/limited", deadline=time.monotonic() + 2.0)
    assert time.monotonic() - t0 < 1.5 and len(api.requests("/limited")) == 1


def test_an_exhausted_github_403_is_waited_for_and_a_plain_403_refused_at_once(api: App, make_client: Any) -> None:
    api.throttled_left, api.reset_in = 1, 1
    hook = first_of(retry_after(), reset_epoch("x-ratelimit-reset", remaining="x-ratelimit-remaining"))
    client = make_client(api.url, backoff_max=5.0, rate_limit_wait=hook)
    res = client.get("/github")
    assert res.status == 200 and res.retries == 1 and res.reasons == ["HTTP 403"]
    with pytest.raises(CredentialsRefused) as e:
        client.get("/forbidden")
    assert e.value.status == 403 and len(api.requests("/forbidden")) == 1


# ---- auth objects ------------------------------------------------------------------------------------

def _oauth(app: App, **kw: Any) -> OAuthClientCredentials:
    kw.setdefault("scope", ["okta.logs.read", "okta.users.read"])
    return OAuthClientCredentials(f"{app.url}/token", CLIENT_ID, kw.pop("secret", CLIENT_SECRET), **kw)


def test_static_tokens_go_in_their_schemes_and_are_listed_as_secrets(api: App, make_client: Any) -> None:
    make_client(api.url, auth=SswsAuth(API_TOKEN)).get("/any")
    make_client(api.url, auth=BearerAuth(API_TOKEN)).get("/any")
    assert [s.headers["Authorization"] for s in api.requests()] == [f"SSWS {API_TOKEN}", f"Bearer {API_TOKEN}"]
    assert SswsAuth(API_TOKEN).secrets() == BearerAuth(API_TOKEN).secrets() == (API_TOKEN,)
    assert API_TOKEN not in repr(BearerAuth(API_TOKEN))


def test_one_token_serves_many_requests_from_four_threads_sharing_a_client(api: App, make_client: Any) -> None:
    auth = _oauth(api)
    client = make_client(api.url, auth=auth)
    statuses: list[int] = []
    start = threading.Barrier(4)

    def work() -> None:
        start.wait()
        for _ in range(10):
            statuses.append(client.get("/api", {"q": 1}).status)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 40
    assert api.tokens_issued == 1 and auth.tokens_fetched == 1
    (token_request,) = api.requests("/token")
    assert token_request.form == {"grant_type": "client_credentials", "client_id": CLIENT_ID,
                                  "client_secret": CLIENT_SECRET, "scope": "okta.logs.read okta.users.read"}
    assert "Authorization" not in token_request.headers  # the API's credential never goes to the token URL
    assert all(s.headers["Authorization"] == "Bearer access-token-0001" for s in api.requests("/api"))
    assert auth.secrets() == (CLIENT_SECRET, "access-token-0001")


def test_the_token_is_refreshed_before_it_expires(api: App, make_client: Any) -> None:
    api.expires_in = "1"  # a string, as some servers send it; renewed at half its life (margin 60 s > 1 s)
    auth = _oauth(api)
    client = make_client(api.url, auth=auth)
    assert client.get("/api").status == 200
    assert client.get("/api").status == 200
    time.sleep(0.7)
    assert client.get("/api").status == 200
    assert api.tokens_issued == 2
    assert [s.headers["Authorization"][-4:] for s in api.requests("/api")] == ["0001", "0001", "0002"]
    assert auth.secrets() == (CLIENT_SECRET, "access-token-0002", "access-token-0001")


def test_a_401_refreshes_the_token_once_and_resends_once(api: App, make_client: Any) -> None:
    client = make_client(api.url, auth=_oauth(api))
    assert client.get("/api").status == 200
    api.revoke()
    res = client.get("/api")
    assert res.status == 200 and res.retries == 0
    assert api.tokens_issued == 2 and len(api.requests("/api")) == 3


def test_threads_meeting_the_same_refused_token_fetch_one_new_token(api: App, make_client: Any) -> None:
    client = make_client(api.url, auth=_oauth(api))
    client.get("/api")
    api.revoke()
    start, statuses = threading.Barrier(4), []

    def work() -> None:
        start.wait()
        statuses.append(client.get("/api").status)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 4 and api.tokens_issued == 2


def test_a_fresh_token_refused_too_is_credentials_refused_without_more_requests(api: App, make_client: Any) -> None:
    api.api_refuses_all = True
    auth = _oauth(api)
    client = make_client(api.url, auth=auth, attempts=5)
    with pytest.raises(CredentialsRefused) as e:
        client.get("/api")
    assert e.value.status == 401 and not isinstance(e.value, TokenRefused)
    assert "freshly fetched token" in str(e.value)
    assert api.tokens_issued == 2 and len(api.requests("/api")) == 2
    assert not any(s in str(e.value) for s in auth.secrets())


def test_a_refused_client_names_the_endpoint_and_the_oauth_error_never_the_secret(
        api: App, make_client: Any) -> None:
    wrong = "wrong-secret-987654"
    auth = OAuthClientCredentials(f"{api.url}/token?tenant=query-secret-77", CLIENT_ID, wrong)
    client = make_client(api.url, auth=auth, attempts=5)
    with pytest.raises(TokenRefused) as e:
        client.get("/api")
    message = str(e.value)
    assert e.value.permanent and e.value.status == 401
    assert f"{api.url}/token" in message and "invalid_client" in message and "is not valid" in message
    assert wrong not in message and "query-secret-77" not in message and "[REDACTED]" in message
    assert len(api.requests("/token")) == 1 and api.requests("/api") == []  # permanent: not retried
    assert auth.secrets() == (wrong,)


def test_a_failing_token_endpoint_is_retried_like_the_api(api: App, make_client: Any) -> None:
    api.token_mode = "503"
    client = make_client(api.url, auth=_oauth(api), attempts=3)
    with pytest.raises(RetryableStatus) as e:
        client.get("/api")
    assert describe(e.value) == "token endpoint HTTP 503"
    assert len(api.requests("/token")) == 3 and api.requests("/api") == []
    api.token_mode = "ok"  # the failed fetches left the token lock free
    assert client.get("/api").status == 200


@pytest.mark.parametrize(("mode", "expected"), [("huge", "larger than"), ("no_token", "without an access_token")])
def test_a_token_answer_we_cannot_use_fails_for_good_naming_the_endpoint(
        mode: str, expected: str, api: App, make_client: Any) -> None:
    api.token_mode = mode
    client = make_client(api.url, auth=_oauth(api))
    with pytest.raises(SourceRequestError, match=expected) as e:
        client.get("/api")
    assert e.value.permanent and f"{api.url}/token" in str(e.value) and CLIENT_SECRET not in str(e.value)
    assert api.requests("/api") == []


def test_a_hanging_token_endpoint_is_cut_at_the_request_deadline(api: App, make_client: Any) -> None:
    api.token_mode = "slow"
    client = make_client(api.url, auth=_oauth(api), attempts=1, timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(httpx.TimeoutException):
        client.get("/api")
    assert time.monotonic() - t0 < 2.5
    api.token_mode = "ok"  # the abandoned fetch left the token lock free
    assert client.get("/api").status == 200
