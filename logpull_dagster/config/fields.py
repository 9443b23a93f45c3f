"""The config's field types: durations, secrets (named, never written), URLs, rate limits, and the strict
base every model of the config shares. No Dagster import."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError

from logpull_dagster.rate import parse_rate_limit
from logpull_dagster.windows import parse_duration

# The longest duration any key takes: longer is a typo, and would overflow the date arithmetic later.
MAX_DURATION = dt.timedelta(days=3650)


def _duration(value: Any) -> dt.timedelta:
    td = value if isinstance(value, dt.timedelta) else parse_duration(value)
    if td < dt.timedelta(0):
        raise ValueError("a duration cannot be negative")
    if td > MAX_DURATION:
        raise ValueError(f"{value!r} is longer than {MAX_DURATION.days}d, the longest duration allowed")
    return td


Duration = Annotated[dt.timedelta, BeforeValidator(_duration)]


def bounded(value: dt.timedelta, low: dt.timedelta, high: dt.timedelta, low_why: str, high_why: str) -> dt.timedelta:
    """``value`` if within ``low .. high``, else a ValueError saying which end and why."""
    if value < low:
        raise ValueError(f"{_written(value)} is shorter than {_written(low)}, the shortest allowed: {low_why}")
    if value > high:
        raise ValueError(f"{_written(value)} is longer than {_written(high)}, the longest allowed: {high_why}")
    return value


def _written(td: dt.timedelta) -> str:
    """``td`` as a config writes it, in the largest unit that divides it: ``3650d``, ``61m``, ``100ms``."""
    ms = td // dt.timedelta(milliseconds=1)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


# The error type of a URL key refused by a model (its ctx: key, why), so that the message names the key.
URL_KEY_ERROR = "url_key"

# Keys holding a URL, whatever model they are in (base_url, token_url, login_url, url, endpoint_url,
# token_uri, iam_endpoint, proxy, and those of plug-in types named alike).
_URL_KEY = re.compile(r"(?:^|_)(?:url|uri|endpoint|proxy)$")

# Proxy credentials would need a secret key of their own (proxy_auth: {env: ...}); until one exists, a
# proxy that asks for them is not supported, and the message says so rather than suggest a key that is not.
_PROXY_USERINFO = ("holds a user name or password (user:password@host); a URL is printed in logs and errors, so "
                   "credentials never go in one, and proxy credentials are not supported yet: remove them and "
                   "let the proxy admit this host without them (e.g. by its address)")


def url_problem(value: str, *, query_allowed: bool = False, key: str = "") -> str | None:
    """Why ``value`` cannot be a URL key (``key``) of the config, or None. Never repeats the URL: it may hold
    a password."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return "is not a valid URL (urllib cannot split it)"
    if "@" in parts.netloc and key.endswith("proxy"):
        return _PROXY_USERINFO
    if "@" in parts.netloc:
        # A password in a URL is printed wherever the URL is: run logs, run storage, compute logs,
        # checkpoint errors (a redirect's message names the URL it was sent from).
        return ("holds a user name or password (user:password@host); a URL is printed in logs and errors, so "
                "credentials never go in one: remove them and name the credential as a secret, {env: NAME}, "
                "in the key the source or sink reads it from")
    if parts.fragment or "#" in value:
        return "holds a fragment (#...), which is never sent to a server; remove it"
    if not query_allowed and (parts.query or "?" in value):
        return ("holds a query (?...); it is the origin and path prefix that each request's path is appended "
                "to, so a query there would be cut off or misplaced: remove it (type rest: query parameters "
                "go in params)")
    return None


class Strict(BaseModel):
    # Durations serialise as seconds, which the loader reads back (resources carry their config as JSON).
    # strict: a YAML `true` is not the number 1 (`page_size: true`), nor 3.0 the count 3.
    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_timedelta="float", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _no_credentials_in_urls(cls, value: Any) -> Any:
        # Every URL key of every model, BaseUrl or not (an S3 or DynamoDB endpoint_url is a plain str):
        # refused before any other check can repeat the URL in its message.
        if isinstance(value, dict):
            for key, v in value.items():
                if isinstance(key, str) and isinstance(v, str) and _URL_KEY.search(key):
                    why = url_problem(v, query_allowed=True, key=key)
                    if why is not None:  # loading._describe names the key: <model's key>.<key>
                        raise PydanticCustomError(URL_KEY_ERROR, "{key}: {why}", {"key": key, "why": why})
        return value


class EnvRef(Strict):
    """A value read from an environment variable at run time: ``{env: NAME}``."""

    env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


def secret_refs_of(model: BaseModel) -> list[EnvRef]:
    """Every secret ``model`` names (each ``{env: NAME}`` among its keys, nested ones included)."""
    out: list[EnvRef] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        for v in value.values() if isinstance(value, dict) else value if isinstance(value, list | tuple) else [value]:
            if isinstance(v, EnvRef):
                out.append(v)
            elif isinstance(v, BaseModel):
                out.extend(secret_refs_of(v))
    return out


def secret(example: str) -> Any:
    """The type of a secret key: only ever ``{env: NAME}``, the variable that holds it at run time.
    ``example``: the variable name the error message suggests, e.g. ``GWS_ACCESS_TOKEN``."""

    def named_only(value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            raise ValueError(f"secrets are never written in the config; name an environment variable: "
                             f"{info.field_name}: {{env: {example}}}")
        return value

    return Annotated[EnvRef, BeforeValidator(named_only)]


# Keys naming a whole endpoint, sent to as given: RFC 6749 3.2 lets a token endpoint carry a query.
_ENDPOINT_KEYS = frozenset({"token_url", "token_uri"})


def _base_url(value: Any, info: ValidationInfo) -> str:
    if not isinstance(value, str) or not re.match(r"^https?://[^\s/]+", value):
        raise ValueError("must be an http(s) URL such as https://admin.googleapis.com")
    why = url_problem(value, query_allowed=info.field_name in _ENDPOINT_KEYS)
    if why is not None:
        raise ValueError(why)
    return value.rstrip("/")


# An API's origin (and optional path prefix), without a trailing slash; never credentials (user:password@),
# a fragment, or (except a token endpoint's) a query.
BaseUrl = Annotated[str, BeforeValidator(_base_url)]


def _rate_limit(value: Any) -> str:
    return str(parse_rate_limit(value if isinstance(value, str) else repr(value)))


# ``N/sec``, ``N/min`` or ``N/hour`` (also ``s``, ``m``, ``h``), written back in the long form.
RateLimitText = Annotated[str, BeforeValidator(_rate_limit)]


# The TLS keys a source or a network sink shares (``ca_file``, ``tls_verify``): each model's validators
# call these, so the rule and its words are one.
def check_ca_file(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise ValueError("must name a PEM file of CA certificates, or be left out")
    return value


def check_proxy(value: str) -> str:
    """A source's ``proxy``: an ``http://`` or ``https://`` forward proxy's origin, nothing more (the model's
    URL check has already refused user info, without repeating the URL)."""
    try:
        parts = urlsplit(value)
        _ = parts.port  # a port that is not a number (or out of range) raises here
    except ValueError:
        raise ValueError("is not a valid URL; write the proxy as http://proxy.example.com:3128") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        scheme = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise ValueError(f"must be an http:// or https:// proxy URL such as http://proxy.example.com:3128 "
                         f"({scheme}; SOCKS proxies are not supported)")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "?" in value or "#" in value:
        raise ValueError("must be the proxy's origin only (scheme, host, port), e.g. http://proxy.example.com:3128; "
                         "remove the path, query or fragment")
    return value


def check_tls_verify(value: bool, info: ValidationInfo) -> bool:
    if not value and info.data.get("ca_file") is not None:
        raise ValueError("false turns certificate checks off, so ca_file would be ignored; "
                         "keep ca_file and remove tls_verify: false, or remove ca_file")
    return value
