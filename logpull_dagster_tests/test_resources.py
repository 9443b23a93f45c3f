"""Typed resources (``resources.py``): every configured source, store and sink is a resource of its own
class whose fields are its config's keys, so the Dagster UI shows them one by one (not one JSON string);
secrets are carried as ``dg.EnvVar`` by name, and the config the resource rebuilds at run time is the one
the file described, for every built-in type."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from logpull_dagster.config import load_config
from logpull_dagster.definitions import build_definitions
from logpull_dagster.keys import api_resource
from logpull_dagster.resources import CheckpointsResource, LandingResource, LogSourceResource, SiemResource
from logpull_dagster.windows import UTC, rfc3339
from logpull_dagster_tests.tls import make_tls_files

START = rfc3339(dt.datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - dt.timedelta(days=2))

GWS_SA = {"name": "gws", "type": "google_workspace", "applications": ["login", "admin"], "start": START,
          "service_account": {"file": {"env": "GWS_SA_FILE"}, "subject": "admin@example.com"},
          "overrides": {"admin": {"settle_lag": "1h"}}, "settle_lag": "7m", "rate_limit": "600/min",
          "deliver_to": ["siem"]}
OKTA_OAUTH = {"name": "okta", "type": "okta", "base_url": "https://acme.okta.com", "start": START,
              "oauth": {"client_id": "0oa123", "private_key": {"env": "OKTA_PRIVATE_KEY"}, "key_id": "k1"},
              "lease_ttl": "90s", "ca_file": "ca.pem"}
OKTA_TOKEN = {"name": "okta2", "type": "okta", "base_url": "https://acme.okta.com", "start": START,
              "token": {"env": "OKTA_TOKEN"}}

STORES: dict[str, dict[str, Any]] = {
    "sqlite+local": {"checkpoints": {"type": "sqlite", "path": "state/cp.db"},
                     "landing": {"type": "local", "path": "state/landing"}},
    "postgres+s3": {"checkpoints": {"type": "postgres", "dsn": {"env": "LOGPULL_PG_DSN"}, "pool_size": 7,
                                    "reconnect_timeout": "2m"},
                    "landing": {"type": "s3", "bucket": "my-logs", "prefix": "landing", "region": "eu-west-1"}},
    "dynamodb": {"checkpoints": {"type": "dynamodb", "table": "logpull", "region": "eu-west-1",
                                 "create_table": True},
                 "landing": {"type": "local", "path": "state/landing"}},
}


def defs_of(tmp_path: Path, stores: dict[str, Any]) -> tuple[Any, dg.Definitions]:
    (tmp_path / "ca.pem").write_bytes(make_tls_files(tmp_path / "tls").ca.read_bytes())
    doc = {"sources": [GWS_SA, OKTA_OAUTH, OKTA_TOKEN], **stores,
           "siem": {"type": "file", "path": "siem", "retries": 2, "lease_ttl": "2m"}}
    (tmp_path / "logpull.yaml").write_text(yaml.safe_dump(doc))
    config = load_config(tmp_path / "logpull.yaml")
    return config, build_definitions(config)


@pytest.mark.parametrize("stores", list(STORES))
def test_every_resource_carries_its_config_as_typed_fields_and_rebuilds_it_exactly(tmp_path: Path,
                                                                                    stores: str) -> None:
    config, defs = defs_of(tmp_path, STORES[stores])
    resources = defs.resources
    for src in config.sources:
        res = resources[api_resource(src.name)]
        assert isinstance(res, LogSourceResource) and type(res) is not LogSourceResource
        assert "settings" not in type(res).model_fields
        assert res.name == src.name and res.type == src.type  # type: ignore[attr-defined]
        assert res.settle_lag == src.settle_lag.total_seconds()  # type: ignore[attr-defined]  # seconds in the UI
        assert res.start == rfc3339(src.start)  # type: ignore[attr-defined]
        expected = src.model_copy(update={"ca_file": str(src.ca_path)}) if src.ca_path else src
        assert res.config.model_dump() == expected.model_dump()  # every key (private attrs are the config's)
    for key, cls in (("checkpoints", CheckpointsResource), ("landing", LandingResource), ("siem", SiemResource)):
        res = resources[key]
        assert isinstance(res, cls) and "settings" not in type(res).model_fields
        cfg = config.checkpoints if key == "checkpoints" else config.landing if key == "landing" else \
            config.all_sinks["siem"]
        assert res._model() == cfg
        assert {k for k in type(cfg).model_fields} <= set(type(res).model_fields)
    assert resources["siem"].retries == 2 and resources["siem"].lease_ttl == 120.0  # type: ignore[attr-defined]


def test_nested_keys_are_typed_config_too(tmp_path: Path) -> None:
    _, defs = defs_of(tmp_path, STORES["sqlite+local"])
    okta = defs.resources[api_resource("okta")]
    assert isinstance(okta.oauth, dg.Config)  # type: ignore[attr-defined]
    assert okta.oauth.client_id == "0oa123" and okta.oauth.key_id == "k1"  # type: ignore[attr-defined]
    gws = defs.resources[api_resource("gws_admin")]
    assert gws.service_account.subject == "admin@example.com"  # type: ignore[attr-defined]
    assert gws.settle_lag == 3600.0  # type: ignore[attr-defined]  # the stream's override


def test_secrets_are_carried_as_env_vars_by_name_never_by_value(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    values = {"GWS_SA_FILE": "/secret/path/sa.json", "OKTA_PRIVATE_KEY": "s3cr3t-key-value",
              "OKTA_TOKEN": "00-okta-token-value", "LOGPULL_PG_DSN": "postgresql://u:pw-value@db/x"}
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    _, defs = defs_of(tmp_path, STORES["postgres+s3"])
    okta = defs.resources[api_resource("okta")]
    assert okta.oauth.private_key == dg.EnvVar("OKTA_PRIVATE_KEY")  # type: ignore[attr-defined]
    assert isinstance(okta.oauth.private_key, dg.EnvVar)  # type: ignore[attr-defined]
    assert okta.secrets_from == {"oauth.private_key": "OKTA_PRIVATE_KEY"}  # type: ignore[attr-defined]
    assert isinstance(defs.resources[api_resource("okta2")].token, dg.EnvVar)  # type: ignore[attr-defined]
    assert isinstance(defs.resources[api_resource("gws_login")].service_account.file, dg.EnvVar)  # type: ignore[attr-defined]
    pg = defs.resources["checkpoints"]
    assert isinstance(pg.dsn, dg.EnvVar) and pg.secrets_from == {"dsn": "LOGPULL_PG_DSN"}  # type: ignore[attr-defined]
    # Every source's messages are cleaned of every secret the config names, the stores' and sinks' too.
    assert okta.secret_envs == ["GWS_SA_FILE", "LOGPULL_PG_DSN", "OKTA_PRIVATE_KEY", "OKTA_TOKEN"]  # type: ignore[attr-defined]
    # The resources' config as Dagster keeps it (the code location's snapshot, the UI's resource page, a
    # run's config) names each variable and holds no value.
    shown = "\n".join(str(r.get_resource_definition().config_schema.as_field().default_value)
                      for r in defs.resources.values())
    assert "{'env': 'OKTA_PRIVATE_KEY'}" in shown and "{'env': 'LOGPULL_PG_DSN'}" in shown
    assert not [v for v in values.values() if v in shown]


def test_the_source_resource_reads_its_secret_when_the_run_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  sim: Any) -> None:
    """A run resolves the EnvVar: the source opens with the value of the variable in the run's
    environment at that moment, not at definition time."""
    monkeypatch.delenv("OKTA_TOKEN", raising=False)
    _, defs = defs_of(tmp_path, STORES["sqlite+local"])
    monkeypatch.setenv("OKTA_TOKEN", "tok-set-after-the-definitions")
    seen: list[str] = []

    @dg.asset(required_resource_keys={api_resource("okta2")})
    def probe(context) -> None:  # type: ignore[no-untyped-def]
        res = getattr(context.resources, api_resource("okta2"))
        seen.append(res.token)
        assert res.config.token.env == "OKTA_TOKEN"  # the model still names the variable

    assert dg.materialize([probe], resources={api_resource("okta2"): defs.resources[api_resource("okta2")]}).success
    assert seen == ["tok-set-after-the-definitions"]
