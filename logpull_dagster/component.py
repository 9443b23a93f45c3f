"""The Component door: ``type: logpull_dagster.LogPullComponent`` in a ``dg`` project's ``defs.yaml``.

A thin door onto the one config model (``config.py``), like dagster-sling's component onto its
``replication.yaml``: the attributes are either the ``logpull.yaml`` document itself, inline, or
``config_file:`` naming one. Either way the document goes through ``parse_config``, so a wrong key or
value fails ``dg check defs`` with the message ``logpull.yaml`` gets, and ``build_definitions`` makes
the same assets, checks, jobs, schedules and sensors as the plain door (``-m logpull_dagster``).

Several components load side by side in one project: each one's shared resources (checkpoints,
landing, each sink) are keyed by a namespace taken from its folder under ``defs/``; everything else is
named per source, so two components naming the same source, or asking for different executors, are
refused at load time with both folders named.
"""

from __future__ import annotations

import datetime as dt
import re
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import dagster as dg
import yaml
from pydantic import BaseModel, ConfigDict, PrivateAttr

from logpull_dagster.config import ConfigError, LogpullConfig, demo_config, load_config, parse_config

if TYPE_CHECKING:
    from typing import Self

# The keys of the logpull.yaml document (config.LogpullConfig), which the attributes may hold inline.
INLINE_KEYS = ("sources", "checkpoints", "landing", "siem", "sinks", "executor")

# Rendered by dg when the defs.yaml loads: the URL is no secret, so a load-time default is fine here.
SIMULATOR_URL_TEMPLATE = '{{ env("LOGPULL_SIMULATOR_URL", "http://127.0.0.1:8765") }}'


def namespace_for(context: dg.ComponentLoadContext) -> str:
    """The resource-key prefix of the component at ``context``: its folder under ``defs/``, as a key."""
    try:
        rel = context.path.relative_to(context.defs_module_path)
    except ValueError:  # a component built outside a defs folder (Python code)
        rel = Path(context.path.name)
    if rel.suffix in (".py", ".yaml"):
        rel = rel.with_suffix("")
    # Resource keys allow letters, digits and underscores only. The defs root itself (a test tree, or
    # one component for the whole project) gets the plain door's keys.
    slug = re.sub(r"[^A-Za-z0-9]+", "_", rel.as_posix()).strip("_.").lower()
    return f"{slug}_" if slug else ""


class ScaffoldParams(BaseModel):
    """``dg scaffold defs logpull_dagster.LogPullComponent NAME --source okta`` (or ``--json-params
    '{"source": "okta"}'``): which API the scaffolded source reads. dg makes one CLI option per field."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["google_workspace", "okta"] = "google_workspace"


class LogPullScaffolder(dg.Scaffolder[ScaffoldParams]):
    """``dg scaffold defs logpull_dagster.LogPullComponent NAME [--source okta]``: a defs.yaml that loads as
    it is, one demo source (Google Workspace ``login`` by default, or Okta's System Log) reading the bundled
    simulator, state under ``<project>/.logpull/NAME``."""

    @classmethod
    def get_scaffold_params(cls) -> type[ScaffoldParams]:
        return ScaffoldParams

    def scaffold(self, request: dg.ScaffoldRequest[ScaffoldParams]) -> None:
        if request.scaffold_format != "yaml":
            dg.scaffold_component(request, {})
            return
        folder = request.target_path
        # The source name is also the asset name (logs/<name>): the folder's, so that two scaffolded
        # components never collide. Source names are lowercase identifiers (config.SourceBase.name).
        name = re.sub(r"[^a-z0-9]+", "_", folder.name.lower()).strip("_") or "demo"
        if not name[0].isalpha():
            name = f"logs_{name}"
        raw = demo_config(base_url=SIMULATOR_URL_TEMPLATE,
                          state_dir=f"{{{{ context.project_root }}}}/.logpull/{name}")
        raw["sources"][0]["name"] = name[:63]
        kind = request.params.source if request.params is not None else "google_workspace"
        if kind == "okta":  # the same demo source, on the simulator's Okta System Log (same token)
            gws = raw["sources"][0]
            raw["sources"][0] = {"name": gws["name"], "type": "okta", "base_url": gws["base_url"],
                                 "token": {"env": "LOGPULL_DEMO_TOKEN"}, "cadence": gws["cadence"],
                                 "start": gws["start"], "settle_lag": gws["settle_lag"]}
        # A fixed start a few hours back from now (demo_config's), so that the first schedule ticks have
        # settled windows to pull and the partition list stays short.
        header = textwrap.dedent(f"""\
            # logpull-dagster: one demo source ({kind}) reading the bundled simulator
            #   python -m logpull_dagster.simulator --port 8765   (its default token: demo-token)
            # Runs read the token from the environment at run time: export LOGPULL_DEMO_TOKEN=demo-token.
            # Secrets stay {{env: NAME}}; never write {{{{ env.NAME }}}} for a secret (dg renders that
            # when the file loads, so the value would become part of the definitions).
            # The attributes are the logpull.yaml schema (see the README), or config_file: logpull.yaml.
            # Scaffolded {dt.datetime.now(dt.UTC):%Y-%m-%d}.
            """)
        body = yaml.safe_dump({"type": request.type_name, "attributes": raw}, sort_keys=False,
                              default_flow_style=False, width=120)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "defs.yaml").write_text(header + body)


@dg.scaffold_with(LogPullScaffolder)
class LogPullComponent(dg.Component, dg.Resolvable, dg.Model):
    """Pull audit logs from REST APIs into a SIEM, window by window, complete (logpull-dagster).

    Attributes: the logpull.yaml document inline (sources, checkpoints, landing, siem, sinks, executor), or
    config_file: a logpull.yaml relative to this defs.yaml's folder. Relative paths inline are
    relative to this defs.yaml's folder; in a config file, to that file's folder. Secrets are named,
    {env: NAME}, and read when a run starts.
    """

    config_file: str | None = None
    # Loosely typed on purpose: the document is checked by config.parse_config, which names every wrong
    # key as logpull.yaml errors do. A typed schema here would make `dg check yaml` (the first half of
    # `dg check defs`) answer first, in jsonschema's words; a dataclass one would let `cadence: weekly`
    # through (dg types dataclass fields `X | str`, for templates).
    sources: list[dict[str, Any]] | None = None
    checkpoints: dict[str, Any] | None = None
    landing: dict[str, Any] | None = None
    siem: dict[str, Any] | None = None
    sinks: dict[str, dict[str, Any]] | None = None
    executor: str | None = None

    # Set when the component loads from a defs.yaml, so that siblings can compare configs.
    _config: LogpullConfig | None = PrivateAttr(default=None)
    _where: str = PrivateAttr(default="a LogPullComponent")
    _namespace: str = PrivateAttr(default="")

    @classmethod
    def get_spec(cls) -> dg.ComponentTypeSpec:
        return dg.ComponentTypeSpec(owners=[], tags=["logpull", "audit-logs", "siem"])

    @classmethod
    def load(cls, attributes: Any, context: dg.ComponentLoadContext) -> Self:
        component = super().load(attributes, context)
        # Checked here, not in build_defs, so that the error is reported as this component's load error.
        component._where = str(context.path)
        component._namespace = namespace_for(context)
        component._config = component.logpull_config(context.path)
        return component

    def logpull_config(self, folder: Path) -> LogpullConfig:
        """The validated config; ``folder``: the defs.yaml's folder (relative paths start there)."""
        inline = {k: getattr(self, k) for k in INLINE_KEYS if getattr(self, k) is not None}
        where = folder / "defs.yaml"
        if self.config_file is not None:
            if inline:
                raise ConfigError(f"{where} is invalid:\n  - attributes: config_file and the inline keys "
                                  f"{sorted(inline)} exclude each other; put them all in {self.config_file}, "
                                  f"or remove config_file")
            path = Path(self.config_file).expanduser()
            path = path if path.is_absolute() else folder / path
            if not path.is_file():
                raise ConfigError(f"{where} is invalid:\n  - attributes.config_file: {path} is not a file "
                                  f"(relative paths are relative to the defs.yaml's folder)")
            return load_config(path)
        if not inline:
            raise ConfigError(f"{where} is invalid:\n  - attributes: give the logpull.yaml keys inline "
                              f"(sources, and optionally checkpoints, landing, siem, sinks, executor), or "
                              f"config_file: logpull.yaml")
        return parse_config(inline, origin=f"{where} (attributes)", base_dir=str(folder))

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        from logpull_dagster.definitions import build_definitions

        config = self._config or self.logpull_config(context.path)
        namespace = self._namespace or namespace_for(context)
        self._refuse_collisions(context, config, namespace)
        return build_definitions(config, namespace=namespace, dg_project=True)

    def _refuse_collisions(self, context: dg.ComponentLoadContext, config: LogpullConfig, namespace: str) -> None:
        """Refuse what would make the project's merged Definitions fail, or mix two configs' state:
        a source named by two components, two components with one namespace, different executors.
        Dagster's own merge error names neither component nor the fix."""
        if context.path == context.defs_module_path:
            return  # the component is the whole defs folder (or a test tree): it has no siblings
        siblings = context.component_tree.get_all_components(LogPullComponent)
        mine = {s.name for s in config.sources}
        for other in siblings:
            if other is self or other._config is None:
                continue
            theirs = other._config
            shared = sorted(mine & {s.name for s in theirs.sources})
            if shared:
                raise ConfigError(
                    f"{self._where}: the source name(s) {shared} are also used by the LogPullComponent in "
                    f"{other._where}; source names must be unique across a project (they name the assets "
                    f"logs/<name> and siem/<name>, their jobs, schedule and sensors): rename one")
            if other._namespace == namespace:
                raise ConfigError(
                    f"{self._where} and {other._where} have the same resource-key namespace {namespace!r}; "
                    f"rename one folder")
            if theirs.executor != config.executor:
                raise ConfigError(
                    f"{self._where} asks for executor {config.executor!r} and {other._where} for "
                    f"{theirs.executor!r}; a project has one executor (dg launch --assets runs use it), so "
                    f"set the same executor in every LogPullComponent (default in_process)")
