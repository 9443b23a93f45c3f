"""dlt's rest_api source on the simulator: one window -> filesystem destination, JSON Lines.

Run with a Python that has ``dlt[filesystem]`` (bench.py makes its own venv for it, so dlt's
dependencies never meet Dagster's). Prints ``<events> <seconds>`` for extract + normalize + load.
"""

import sys
import tempfile
import time

import dlt
from dlt.sources.rest_api import rest_api_source

url, start, end, out = sys.argv[1:5]
source = rest_api_source({
    "client": {
        "base_url": url,
        "auth": {"type": "bearer", "token": "bench-token"},
        "paginator": {"type": "cursor", "cursor_path": "nextPageToken", "cursor_param": "pageToken"},
    },
    "resources": [{
        "name": "activities",
        "endpoint": {
            "path": "admin/reports/v1/activity/users/all/applications/login",
            "params": {"startTime": start, "endTime": end, "maxResults": 1000},
            "data_selector": "items",
        },
    }],
})
pipeline = dlt.pipeline(pipeline_name="bench", destination=dlt.destinations.filesystem(bucket_url=f"file://{out}"),
                        dataset_name="logs", pipelines_dir=tempfile.mkdtemp())
t0 = time.perf_counter()
pipeline.run(source, loader_file_format="jsonl")
elapsed = time.perf_counter() - t0
print(pipeline.last_trace.last_normalize_info.row_counts["activities"], elapsed)
