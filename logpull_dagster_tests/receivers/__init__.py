"""Receivers for SIEMs no server of which can be installed here (Elasticsearch): each is a small HTTP server
implementing the vendor's documented contract (``../shared/reference/siem-sinks.md``), run in a thread or a
process on a loopback port, holding what it indexed so tests count every event. Where a real server can be
installed (rsyslog, moto's S3), the tests use that instead. Splunk HEC's receiver is bundled with the
product (``logpull_dagster/simulator/hec.py``: ``make demo`` delivers to it too)."""
