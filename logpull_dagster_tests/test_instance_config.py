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
