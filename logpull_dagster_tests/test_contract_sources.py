"""The LogSource contract (``contracts/log_source.py``), run against every source over real HTTP.

To add an implementation, add one entry to FACTORIES: its name, and a SourceUnderTest that builds the
source for a simulator base URL (``TOKEN`` as its credential, small pages, quick retries) and names the
simulator stream and emulated API it reads, e.g.
``"okta": SourceUnderTest(okta, "system_log", "okta_system_log", lambda i: i[0])``.
Every contract test then runs for it too; nothing else changes.
"""

from __future__ import annotations

import pytest

from logpull_dagster.sources.auth import OAuthClientCredentials
from logpull_dagster.sources.github import GitHubAuditLogSource
from logpull_dagster.sources.google_workspace import GoogleWorkspaceSource
from logpull_dagster.sources.msgraph import MsGraphSource, scope_for
from logpull_dagster.sources.okta import OktaSystemLogSource
from logpull_dagster.sources.rest import RestSource
from logpull_dagster.sources.slack import SlackAuditLogsSource
from logpull_dagster_tests import cli, msgraph_login
from logpull_dagster_tests.conftest import TOKEN
from logpull_dagster_tests.contracts.log_source import *  # noqa: F403
from logpull_dagster_tests.contracts.log_source import SourceUnderTest


def google_workspace(url: str) -> GoogleWorkspaceSource:
    return GoogleWorkspaceSource(base_url=url, application="login", access_token=TOKEN, page_size=50,
                                 http_attempts=4, backoff_initial=0.01, backoff_max=0.05, timeout=5)


def okta(url: str) -> OktaSystemLogSource:
    return OktaSystemLogSource(base_url=url, token=TOKEN, page_size=50, http_attempts=4, backoff_initial=0.01,
                               backoff_max=0.05, timeout=5)


def github(url: str) -> GitHubAuditLogSource:
    return GitHubAuditLogSource(base_url=url, token=TOKEN, enterprise="acme", page_size=50, http_attempts=4,
                                backoff_initial=0.01, backoff_max=0.05, timeout=5)


def slack(url: str) -> SlackAuditLogsSource:
    return SlackAuditLogsSource(base_url=url, token=TOKEN, page_size=50, http_attempts=4, backoff_initial=0.01,
                                backoff_max=0.05, timeout=5)


def okta_rest(url: str) -> RestSource:
    """Okta's System Log described as ``type: rest`` (``cli.SOURCES["okta_rest"]``), not coded."""
    return cli.rest_source("okta_rest", url, page_size=50, http_attempts=4, backoff_initial=0.01, backoff_max=0.05,
                           timeout=5)
def msgraph(url: str) -> MsGraphSource:
    # Tokens from another simulator (msgraph_login): the suite's fault rules strike the API, not the login host.
    auth = OAuthClientCredentials(msgraph_login.token_url(), msgraph_login.CLIENT, TOKEN, scope_for(url))
    return MsGraphSource(base_url=url, stream="directory_audits", auth=auth, page_size=50, http_attempts=4,
                         backoff_initial=0.01, backoff_max=0.05, timeout=5)


FACTORIES: dict[str, SourceUnderTest] = {
    # Google's event id joins the four parts of the item's ``id`` (sources/google_workspace.event_id)
    "google_workspace": SourceUnderTest(google_workspace, "login", "google_reports", "/".join),
    # Okta's event id is the LogEvent's ``uuid``, the simulator's one-part id
    "okta": SourceUnderTest(okta, "system_log", "okta_system_log", lambda i: i[0]),
    # GitHub's event id is ``@timestamp/_document_id`` (sources/github.py says why)
    "github": SourceUnderTest(github, "audit_log", "github_audit_log", "/".join),
    # Slack's event id is "<date_create>/<id>" (sources/slack.py), the simulator's (date_create, id) joined
    "slack": SourceUnderTest(slack, "audit_logs", "slack_audit_logs", "/".join),
    # the same API described in config: event_id is the same ``uuid``
    "okta_rest": SourceUnderTest(okta_rest, "system_log", "okta_system_log", lambda i: i[0]),
    # Graph's event id is the item's ``id``
    "msgraph": SourceUnderTest(msgraph, "directory_audits", "msgraph", lambda i: i[0]),
}


@pytest.fixture(params=list(FACTORIES))
def source_backend(request: pytest.FixtureRequest) -> SourceUnderTest:
    return FACTORIES[request.param]
