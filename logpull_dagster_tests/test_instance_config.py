"""The shipped dagster.yaml files are valid instance configs that do what their comments say."""

from pathlib import Path

import dagster as dg
import yaml

ROOT = Path(__file__).resolve().parent.parent


def load(tmp_path: Path, config: dict) -> dg.DagsterInstance:
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    return dg.DagsterInstance.from_config(str(tmp_path))


def test_local_dagster_yaml(tmp_path):
    with load(tmp_path, yaml.safe_load((ROOT / "dagster.yaml").read_text())) as inst:
        assert inst.run_retries_enabled and inst.run_retries_max_retries == 2
        assert not inst.run_retries_retry_on_asset_or_op_failure
        assert inst.run_monitoring_enabled
        assert inst.get_concurrency_config().pool_config.default_pool_limit == 2


def test_production_example_without_its_postgres_storage(tmp_path):
    config = yaml.safe_load((ROOT / "examples" / "dagster.production.yaml").read_text())
    assert config.pop("storage")["postgres"]["postgres_db"]["password"] == {"env": "DAGSTER_PG_PASSWORD"}
    with load(tmp_path, config) as inst:
        assert type(inst.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert inst.get_concurrency_config().pool_config.default_pool_limit == 2
        assert inst.run_retries_enabled


def test_a_fresh_home_is_created_and_migrated_once_before_anything_runs_on_it(tmp_path):
    """``make demo`` and ``make ui`` create the instance storage in one process (demo.init_instance) before
    ``dagster dev`` starts its webserver, daemon and code server at once: on a fresh SQLite home those race
    to create it and can leave alembic's version table with two heads for good (issue 24)."""
    import shutil
    import sqlite3

    from logpull_dagster.demo import init_instance

    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    init_instance(home)
    init_instance(home)  # again (make ui after make demo): a no-op
    dbs = {p.relative_to(home).as_posix(): p for p in home.rglob("*.db")}
    assert {"history/runs.db", "history/runs/index.db", "schedules/schedules.db"} <= dbs.keys()
    heads = set()
    for name, path in dbs.items():
        with sqlite3.connect(path) as db:
            rows = db.execute("SELECT version_num FROM alembic_version").fetchall()
        assert len(rows) == 1, (name, rows)  # one head
        heads |= {r[0] for r in rows}
    assert len(heads) == 1
    with dg.DagsterInstance.from_config(str(home)) as inst:  # usable as it is
        assert inst.get_runs() == [] and inst.all_instigator_state() == []
