"""A source's way to its API (issue 24): a forward ``proxy`` every request of the source goes through (a real
proxy here, counting what it forwards), mutual TLS (``client_cert``/``client_key``) against a server that
requires a client certificate, and an Okta token endpoint that never answers, named as such.

Windows are on conftest's DAY with the simulator's clock frozen at its noon (``hour()``, ``SIM_NOW``)."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from logpull_dagster import plugins
from logpull_dagster.config import ConfigError, load_config
from logpull_dagster.pull import pull_window
from logpull_dagster.simulator import Simulator
from logpull_dagster.simulator.okta_system_log import OktaSystemLogApi
from logpull_dagster.sources import LogSource, SourceRequestError, SourceUnavailable
from logpull_dagster.windows import Window

from .conftest import SIM_NOW, TOKEN, hour, ts
from .servers import Gate
from .test_okta import CLIENT_ID, rsa_key
from .tls import make_mutual_tls_files

W10 = Window(hour(10), hour(11))
PASSWORD = "pr0xy-s3cr3t"

# Hop-by-hop headers (RFC 9110 7.6.1) and the ones the proxy sets itself: not forwarded either way.
_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade", "host", "content-length"}


class ForwardProxy:
    """A plain HTTP forward proxy: it takes absolute-URI requests (``GET http://host:port/path``), sends them
    on with httpx and answers with what came back, counting every request it forwarded by path."""

    def __init__(self) -> None:
        self.forwarded: list[tuple[str, str]] = []  # (method, absolute URL)
        self.trickle = False  # True: the body goes out one byte every 0.1 s (a proxy as slow as it can be)
        self._upstream = httpx.Client(trust_env=False, follow_redirects=False, timeout=10)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                if not self.path.startswith("http://"):  # an origin-form request: not one for a proxy
                    self.send_error(400, "a forward proxy takes absolute URIs only")
                    return
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                proxy.forwarded.append((self.command, self.path))
                r = proxy._upstream.request(self.command, self.path, headers=headers, content=body)
                self.send_response(r.status_code)
                for k, v in r.headers.multi_items():
                    if k.lower() not in _HOP and k.lower() != "content-encoding":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(r.content)))
                self.end_headers()
                if not proxy.trickle:
                    self.wfile.write(r.content)
                    return
                try:
                    for i in range(len(r.content)):
                        self.wfile.write(r.content[i:i + 1])
                        self.wfile.flush()
                        time.sleep(0.1)
                except OSError:  # the client gave up (its deadline): as it should
                    self.close_connection = True

            do_GET = do_POST = _forward

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def paths(self) -> list[str]:
        return [httpx.URL(url).path for _, url in self.forwarded]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._upstream.close()


@pytest.fixture
def forward_proxy() -> Iterator[ForwardProxy]:
    p = ForwardProxy()
    yield p
    p.close()


@pytest.fixture
def okta_sim() -> Iterator[Simulator]:
    with Simulator(seed=11, events_per_hour=300, token=TOKEN) as sim:
        sim.set_clock(now=SIM_NOW)
        yield sim


def write_config(folder: Path, **keys: Any) -> Path:
    src = {"name": "okta", "type": "okta", "base_url": "https://acme.okta.com", "token": {"env": "OKTA_TOKEN"},
           "start": ts(-24), "page_size": 50, "http_timeout": "5s", "http_attempts": 2, "http_backoff_max": "50ms",
           **keys}
    doc = {"sources": [src], "checkpoints": {"type": "sqlite", "path": "state/cp.db"},
           "landing": {"type": "local", "path": "state/landing"}, "siem": {"type": "file", "path": "state/siem"}}
    path = folder / "logpull.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def open_from_config(folder: Path, **keys: Any) -> LogSource:
    """The source as a run opens it: the config loaded from a file, then the type's open function."""
    env = {"OKTA_TOKEN": TOKEN, "OKTA_KEY": keys.pop("_key", "")}  # the secrets, as the run's environment
    cfg = load_config(write_config(folder, **keys)).sources[0]
    return plugins.open_source(cfg, env.__getitem__)


def read_window(src: LogSource, store, landing) -> list[str]:  # type: ignore[no-untyped-def]
    try:
        pull_window(src, W10, source_name="okta", checkpoints=store, landing=landing, lease_ttl=60, owner="r")
    finally:
        src.close()
    cp = store.get("okta", "pull", W10.start.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return sorted(orjson.loads(line)["id"] for p in landing.pages("okta", W10, cp.page_seq)
                  for line in landing.read_lines(p))


def truth(sim: Simulator) -> list[str]:
    return sorted(i[0] for i in sim.ground_truth_ids("system_log", W10.start, W10.end, api="okta_system_log"))


def log_requests(sim: Simulator) -> list[dict[str, Any]]:
    return [r for r in sim.requests() if r["path"] == "/api/v1/logs"]


# ---- proxy ----------------------------------------------------------------------------------------------

def test_with_proxy_every_page_goes_through_it_and_the_window_reads_completely(okta_sim, forward_proxy, store,
                                                                             landing, tmp_path):
    src = open_from_config(tmp_path, base_url=okta_sim.url, proxy=forward_proxy.url)
    assert read_window(src, store, landing) == truth(okta_sim)
    pages = len(log_requests(okta_sim))
    assert pages >= 3  # several pages, each one (the next links are absolute URLs) through the proxy
    assert forward_proxy.paths() == ["/api/v1/logs"] * pages


def test_without_proxy_nothing_goes_through_it(okta_sim, forward_proxy, store, landing, tmp_path, monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    src = open_from_config(tmp_path, base_url=okta_sim.url)
    assert read_window(src, store, landing) == truth(okta_sim)
    assert forward_proxy.forwarded == [] and log_requests(okta_sim)


def test_the_oauth_token_request_goes_through_the_proxy_too(okta_sim, forward_proxy, tmp_path):
    private, public = rsa_key()
    next(a for a in okta_sim.apis if isinstance(a, OktaSystemLogApi)).register_client(CLIENT_ID, public)
    src = open_from_config(tmp_path, base_url=okta_sim.url, proxy=forward_proxy.url, token=None,
                           oauth={"client_id": CLIENT_ID, "private_key": {"env": "OKTA_KEY"}}, _key=private)
    try:
        assert src.fetch_page(W10, None).items
    finally:
        src.close()
    assert forward_proxy.paths() == ["/oauth2/v1/token", "/api/v1/logs"]


def test_a_trickling_proxy_is_cut_at_the_request_deadline(okta_sim, forward_proxy, tmp_path):
    """The request deadline (http.py's network backend) holds through a proxy too: httpx's own timeout
    times each read, and a byte every 0.1 s would never trip it."""
    forward_proxy.trickle = True
    src = open_from_config(tmp_path, base_url=okta_sim.url, proxy=forward_proxy.url, http_timeout="1s",
                           http_attempts=1)
    started = time.monotonic()
    try:
        with pytest.raises(SourceUnavailable, match=r"Okta System Log: still failing after 1 attempts "
                                                    r"\(last: ReadTimeout\)"):
            src.fetch_page(W10, None)
    finally:
        src.close()
    assert time.monotonic() - started < 3 and forward_proxy.paths() == ["/api/v1/logs"]


@pytest.mark.parametrize(("proxy", "said"), [
    ("socks5://127.0.0.1:1080", r"must be an http:// or https:// proxy URL .*\(scheme 'socks5'; SOCKS proxies "
                                r"are not supported\)"),
    ("proxy.example.com:3128", r"must be an http:// or https:// proxy URL"),
    ("http://proxy.example.com:3128/path", r"must be the proxy's origin only"),
    ("http://proxy.example.com:3128?x=1", r"must be the proxy's origin only"),
    ("http://proxy.example.com:notaport", r"is not a valid URL"),
])
def test_a_proxy_that_is_not_an_http_proxy_origin_is_refused_naming_the_key(tmp_path, proxy, said):
    with pytest.raises(ConfigError, match=r"sources\[0\] \(okta\)\.proxy: " + said):
        load_config(write_config(tmp_path, proxy=proxy))


def test_proxy_credentials_are_refused_as_not_supported_and_never_printed(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write_config(tmp_path, proxy=f"http://me:{PASSWORD}@proxy.example.com:3128"))
    text = str(e.value)
    assert "sources[0] (okta).proxy: holds a user name or password" in text
    assert "proxy credentials are not supported yet" in text and PASSWORD not in text


def test_an_https_proxy_is_accepted(tmp_path):
    cfg = load_config(write_config(tmp_path, proxy="https://proxy.example.com:3129")).sources[0]
    assert cfg.client_options()["proxy"] == "https://proxy.example.com:3129"


# ---- mutual TLS ------------------------------------------------------------------------------------------

@pytest.fixture
def mtls_sim(tmp_path) -> Iterator[tuple[Simulator, Path]]:
    """The simulator over HTTPS, requiring a client certificate signed by the test CA; the folder holds
    ca.pem, client.pem and client-key.pem (and the config file the test writes)."""
    server, _ = make_mutual_tls_files(tmp_path)
    sim = Simulator(seed=11, events_per_hour=300, token=TOKEN, tls_cert=server.cert, tls_key=server.key)
    # The simulator's own TLS context, made to require a client certificate: no option of its for that.
    sim._tls.verify_mode = ssl.CERT_REQUIRED  # type: ignore[union-attr]
    sim._tls.load_verify_locations(cafile=str(server.ca))  # type: ignore[union-attr]
    with sim:
        sim.set_clock(now=SIM_NOW)
        yield sim, tmp_path


def test_with_client_cert_and_key_a_server_requiring_one_is_read(mtls_sim, store, landing):
    sim, folder = mtls_sim
    src = open_from_config(folder, base_url=sim.url, ca_file="ca.pem", client_cert="client.pem",
                           client_key="client-key.pem")  # relative to the config file's folder
    assert read_window(src, store, landing) == truth(sim)


def test_without_a_client_cert_the_server_s_refusal_is_clear_and_not_retried(mtls_sim):
    sim, folder = mtls_sim
    src = open_from_config(folder, base_url=sim.url, ca_file="ca.pem", http_attempts=5)
    try:
        with pytest.raises(SourceRequestError) as e:
            src.fetch_page(W10, None)
    finally:
        src.close()
    text = str(e.value)
    assert f"the TLS server {sim.url} refused the handshake" in text
    assert "set client_cert and client_key" in text
    assert log_requests(sim) == []  # no request got through, and no retry was made of it


def test_client_cert_and_key_are_checked_when_the_config_loads(tmp_path):
    make_mutual_tls_files(tmp_path)
    base = {"base_url": "https://127.0.0.1:1", "ca_file": "ca.pem"}
    with pytest.raises(ConfigError, match=r"\(okta\): client_key: mutual TLS needs both client_cert and client_key"):
        load_config(write_config(tmp_path, **base, client_cert="client.pem"))
    with pytest.raises(ConfigError, match=r"\(okta\): client_cert: mutual TLS needs both client_cert and client_key"):
        load_config(write_config(tmp_path, **base, client_key="client-key.pem"))
    with pytest.raises(ConfigError, match=r"\(okta\)\.client_key: .*missing.pem does not exist \(relative paths "
                                          r"are relative to the config file's folder\)"):
        load_config(write_config(tmp_path, **base, client_cert="client.pem", client_key="missing.pem"))
    # the server's key is not the client certificate's
    with pytest.raises(ConfigError, match=r"\(okta\)\.client_cert: .*client.pem and .*key.pem are not a PEM "
                                          r"certificate and its unencrypted private key"):
        load_config(write_config(tmp_path, **base, client_cert="client.pem", client_key="key.pem"))
    # an encrypted key: refused as such when the config loads, never a passphrase prompt on the terminal
    plain = serialization.load_pem_private_key((tmp_path / "client-key.pem").read_bytes(), None)
    (tmp_path / "locked.pem").write_bytes(plain.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")))
    with pytest.raises(ConfigError, match=r"\(okta\)\.client_key: .*locked.pem is encrypted \(a passphrase\); "
                                          r"decrypt it once"):
        load_config(write_config(tmp_path, **base, client_cert="client.pem", client_key="locked.pem"))
    cfg = load_config(write_config(tmp_path, **base, client_cert="client.pem", client_key="client-key.pem"))
    src = cfg.sources[0]
    assert src.client_options()["client_cert"] == (str(tmp_path / "client.pem"), str(tmp_path / "client-key.pem"))


# ---- Okta: a token endpoint that never answers ------------------------------------------------------------

def test_an_okta_token_endpoint_that_never_answers_is_named_not_the_system_log(okta_sim, tmp_path):
    private, public = rsa_key()
    next(a for a in okta_sim.apis if isinstance(a, OktaSystemLogApi)).register_client(CLIENT_ID, public)
    gate = Gate(int(httpx.URL(okta_sim.url).port or 0))
    gate.pause()  # connections are accepted, and never answered
    token_url = f"{gate.url}/oauth2/v1/token"
    try:
        oauth = {"client_id": CLIENT_ID, "private_key": {"env": "OKTA_KEY"}, "token_url": token_url}
        src = open_from_config(tmp_path, base_url=okta_sim.url, token=None, http_timeout="1s", _key=private,
                               oauth=oauth)
        try:
            with pytest.raises(SourceUnavailable) as e:
                src.fetch_page(W10, None)
        finally:
            src.close()
    finally:
        gate.close()
    assert str(e.value) == (f"the token endpoint {token_url} (a token for the Okta System Log): still failing after "
                            f"2 attempts (last: ReadTimeout)")
    assert okta_sim.requests() == []  # neither the token endpoint behind the gate nor the API was reached
