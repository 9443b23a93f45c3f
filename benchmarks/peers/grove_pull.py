"""HashiCorp Grove's gsuite_activities connector on the simulator: one window -> local_file output.

Run with a Python that has ``grove==2.2.0`` (its own venv, like dlt). Prints ``rss_kb <VmHWM>``, then
``<events> <seconds>``: events Grove wrote (counted back from its output files), seconds for one
``Connector.run()`` (discovery doc load, every page, dedup, gzip NDJSON writes; not imports or setup).

Grove runs as shipped: its local_file config handler reads a connector document written to a temp
dir, its local_memory cache holds the pointer, its local_file output writes ``<out>/logs/...json.gz``
(one file per page, the entries plus Grove's ``_grove`` metadata). Three things in
``grove/connectors/gsuite/activities.py`` have no setting, so this script patches them:

* endpoint: line 111 calls ``build("admin", "reports_v1", http=http)`` with no ``client_options``,
  so requests go to the discovery doc's rootUrl https://admin.googleapis.com/. The module's ``build``
  name is replaced by ``build`` with ``client_options={"api_endpoint": <simulator url>}``.
* credentials: ``get_credentials`` (line 196) makes service-account credentials from the key JSON,
  which would sign a JWT and POST it to Google's token_uri (the simulator has no token endpoint).
  It is replaced by ``google.oauth2.credentials.Credentials("bench-token")``, a credentials object
  that already carries the token, so it is never refreshed; requests carry ``Bearer bench-token``.
* window end: line 115 reads up to ``datetime.utcnow() - delay`` and recomputes it on every page
  (so endTime would change between pages and the simulator's query-bound pageToken would stop
  matching). The module's ``datetime`` is replaced by a subclass whose ``utcnow()`` returns <end>.
  The window start is Grove's own pointer, seeded to <start> in its cache before the run.

Grove sends no maxResults, so pages are the API default (1000). Grove's run() logs and swallows
collection errors, so this script fails if Grove logged any error.
"""

import functools
import glob
import gzip
import json
import logging
import os
import sys
import tempfile
import time
from datetime import datetime

from google.oauth2.credentials import Credentials
from grove.connectors.gsuite import activities
from grove.entrypoints import base

url, start, end, out = sys.argv[1:5]
out = os.path.abspath(out)
os.makedirs(out, exist_ok=True)
conf_dir = tempfile.mkdtemp(prefix="grove-conf-")
with open(os.path.join(conf_dir, "login.json"), "w") as f:
    json.dump({"name": "bench", "connector": "gsuite_activities", "identity": "admin@example.com",
               "key": "{}", "operation": "login", "outputs": {"logs": "raw"}}, f)
# This script's own process (bench.py runs it as a child): Grove reads its handlers from the environment.
os.environ.update(GROVE_CONFIG_LOCAL_FILE_PATH=conf_dir, GROVE_CACHE_HANDLER="local_memory",
                  GROVE_OUTPUT_HANDLER="local_file", GROVE_OUTPUT_LOCAL_FILE_PATH=out)

end_dt = datetime.fromisoformat(end.replace("Z", ""))


class PinnedClock(datetime):
    @classmethod
    def utcnow(cls):
        return end_dt


activities.build = functools.partial(activities.build, client_options={"api_endpoint": url.rstrip("/") + "/"})
activities.datetime = PinnedClock
activities.Connector.get_credentials = lambda self: Credentials("bench-token")

errors = []


class ErrorLog(logging.Handler):
    def emit(self, record):
        errors.append(record)


logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
logging.getLogger("grove").addHandler(ErrorLog(logging.ERROR))

(config,) = base.configure()  # Grove's local_file config handler
connector = activities.Connector(config, {"runtime": __file__})
connector.pointer = start  # Grove's own pointer: collect() reads from here up to utcnow() (= end)
t0 = time.perf_counter()
connector.run()
elapsed = time.perf_counter() - t0
if errors:
    sys.exit(f"grove logged errors: {[(r.getMessage(), getattr(r, 'exception', None)) for r in errors]}")
events = 0
for path in glob.glob(f"{out}/logs/**/*.json.gz", recursive=True):
    with gzip.open(path, "rb") as f:
        events += len([line for line in f.read().split(b"\r\n") if line])
assert events == connector._saved["logs"], (events, connector._saved)
with open("/proc/self/status") as f:
    print("rss_kb", next(line.split()[1] for line in f if line.startswith("VmHWM")))
print(events, elapsed)
