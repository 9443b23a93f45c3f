"""The config's field types: durations, secrets (named, never written), URLs, rate limits, and the strict
base every model of the config shares. No Dagster import."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo

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


class Strict(BaseModel):
    # Durations serialise as seconds, which the loader reads back (resources carry their config as JSON).
    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_timedelta="float")


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


def _base_url(value: Any) -> str:
    if not isinstance(value, str) or not re.match(r"^https?://[^\s/]+", value):
        raise ValueError("must be an http(s) URL such as https://admin.googleapis.com")
    return value.rstrip("/")


# An API's origin (and optional path prefix), without a trailing slash.
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


def check_tls_verify(value: bool, info: ValidationInfo) -> bool:
    if not value and info.data.get("ca_file") is not None:
        raise ValueError("false turns certificate checks off, so ca_file would be ignored; "
                         "keep ca_file and remove tls_verify: false, or remove ca_file")
    return value
