import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
# The version is written once, in logpull_dagster/_version.py; read as text, so that building the package
# does not import it (and its dependencies).
VERSION = re.search(r'^__version__ = "([^"]+)"$', (HERE / "logpull_dagster" / "_version.py").read_text(), re.M)[1]

# Each dagster-<lib> release pins one exact dagster, and PyPI is often mid-release: an unpinned
# `pip install dagster dagster-aws` can backtrack to dagster-aws 0.11 (2021), which fails to import.
# Pin the whole set together and move it together.
DAGSTER = "1.13.27"
DAGSTER_LIBS = "0.29.27"

setup(
    name="logpull-dagster",
    version=VERSION,
    description="Pull security and audit logs from REST APIs into a SIEM, complete, on Dagster.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    license_files=["LICENSE"],
    packages=find_packages(exclude=["logpull_dagster_tests*"]),
    package_data={"logpull_dagster": ["py.typed"]},
    python_requires=">=3.11",
    install_requires=[
        f"dagster=={DAGSTER}",
        f"dagster-webserver=={DAGSTER}",
        f"dagster-aws=={DAGSTER_LIBS}",
        # The `dg` CLI (dg check defs / list defs / launch) for the Component door, logpull_dagster.LogPullComponent.
        f"dagster-dg-cli=={DAGSTER}",
        f"dagster-dg-core=={DAGSTER}",
        # Production state: Dagster's own storage on PostgreSQL, and the postgres checkpoint store.
        f"dagster-postgres=={DAGSTER_LIBS}",
        "psycopg[binary,pool]>=3.2,<4",
        "boto3>=1.35",
        # Google service accounts (domain-wide delegation) for the Reports API; also signs Okta's
        # private_key_jwt client assertions (google.auth.crypt / google.auth.jwt).
        "google-auth>=2.30,<3",
        "httpx>=0.28,<0.29",
        "pandas>=2.2",
        "pyyaml>=6.0",
        "stamina>=25.1",
        "orjson>=3.10",
    ],
    extras_require={
        "dev": [
            "pytest>=8",
            "pytest-timeout>=2.3",
            # Two test processes: most of the suite waits on real servers and CLI processes, not the CPU
            # (measured on 2 cores: 19 min serial, 10 min with -n 2).
            "pytest-xdist>=3.6",
            "ruff>=0.6",
            "playwright>=1.45",
            "hypothesis>=6.100",
            "trustme>=1.1",
            # DynamoDB and S3 for the tests: moto's server mode, a real HTTP server on 127.0.0.1.
            "moto[server]>=5.1",
            # Ships Google's discovery document of the Reports API (admin.reports_v1.json): the tests
            # check the source and the simulator against it. Not imported by the package.
            "google-api-python-client>=2.150",
        ],
    },
    entry_points={
        "console_scripts": [
            "logpull=logpull_dagster.cli:main",
            "logpull-simulator=logpull_dagster.simulator.__main__:main",
        ],
        # `dg list components` / `dg scaffold defs` find LogPullComponent through this group.
        "dagster_dg_cli.registry_modules": ["logpull_dagster = logpull_dagster"],
    },
)
