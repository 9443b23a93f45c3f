"""The emulated APIs the simulator serves, in the order the server tries their paths.

Adding an API is one module (a subclass of ``api.EmulatedApi``) and one line here.
"""

from __future__ import annotations

from .api import ApiFactory
from .github_audit_log import GitHubAuditLogApi
from .google_reports import GoogleReportsApi
from .msgraph import MsGraphApi
from .okta_system_log import OktaSystemLogApi
from .slack_audit_logs import SlackAuditLogsApi

#: The first one also renders ``Simulator.ground_truth`` when no ``api=`` names another.
EMULATED_APIS: tuple[ApiFactory, ...] = (
    GoogleReportsApi,
    OktaSystemLogApi,
    GitHubAuditLogApi,
    SlackAuditLogsApi,
    MsGraphApi,
)
