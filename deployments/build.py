"""Deployments from the collections config, by one route: :func:`deployment_specs`.

Every deployment (a reindex per collection, an evaluation per ``[evaluations.*]`` table) is described
once, as a :class:`DeploymentSpec`; :func:`build_deployments` turns the specs into Prefect
``RunnerDeployment`` objects (for ``prefect.serve`` or ``prefect.deploy``) and
:func:`render_prefect_yaml` writes the same specs as a ``prefect.yaml`` on demand
(``corpus-search deploy --write-yaml PATH``), so the two can never disagree.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from deployments.config import (
    EVALUATE_FLOW,
    EXTRA_LOGGERS,
    INDEX_FLOW,
    ConfigError,
    DeployConfig,
)


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment, independent of how it is registered."""

    flow: str  #: ``module:function`` of the flow
    name: str
    description: str
    cron: str
    timezone: str | None
    paused: bool
    parameters: dict[str, Any]
    tags: list[str]

    @property
    def entrypoint(self) -> str:
        """``flows/index_corpus.py:index_corpus``: the file form ``prefect deploy`` reads."""
        module, function = self.flow.split(":")
        return module.replace(".", "/") + ".py:" + function


def _selected(cfg: DeployConfig, only: list[str] | None) -> tuple[list[str], list[str]]:
    if only is None:
        return list(cfg.collections), list(cfg.evaluations)
    unknown = sorted(set(only) - set(cfg.collections) - set(cfg.evaluations))
    if unknown:
        raise ConfigError(
            f"unknown collections/evaluations {unknown}; the config defines {sorted(cfg.collections)}"
            + (f" and evaluations {sorted(cfg.evaluations)}" if cfg.evaluations else "")
        )
    return [n for n in only if n in cfg.collections], [n for n in only if n in cfg.evaluations]


def deployment_specs(cfg: DeployConfig, *, only: list[str] | None = None, absolute: bool = True) -> list[DeploymentSpec]:
    """Every deployment the config defines (or those of the collections/evaluations in ``only``).

    With ``absolute`` (every route), relative paths in parameters are resolved under the config's
    ``base_dir``, and a database the config does not name is this process's, made absolute: a flow run's
    working directory is its worker's, never the config's. Evaluation parameters are checked against the
    evaluate flow's signature, so a typo fails here rather than at 03:00.
    """
    from flows.evaluate import evaluate

    collections, evaluations = _selected(cfg, only)
    specs = []
    for name in collections:
        spec = cfg.collections[name]
        specs.append(DeploymentSpec(
            flow=INDEX_FLOW, name=cfg.reindex_name(name),
            description=f"Reindex collection {name!r} ({len(spec.sources)} sources) on cron {spec.cron!r}",
            cron=spec.cron, timezone=cfg.timezone_of(name), paused=spec.paused,
            parameters=cfg.index_parameters(name, absolute=absolute), tags=cfg.tags_of(name),
        ))
    for name in evaluations:
        ev = cfg.evaluations[name]
        specs.append(DeploymentSpec(
            flow=EVALUATE_FLOW, name=cfg.evaluate_name(name),
            description=f"Evaluate {ev.dataset!r} on cron {ev.cron!r}",
            cron=ev.cron, timezone=ev.timezone or cfg.timezone, paused=ev.paused,
            parameters=cfg.evaluate_parameters(name, evaluate, absolute=absolute),
            tags=cfg.tags_of(name, evaluation=True),
        ))
    return specs


def _flow_function(flow: str):
    import importlib

    module, function = flow.split(":")
    return getattr(importlib.import_module(module), function)


def build_deployments(cfg: DeployConfig, *, work_pool: str | None = None, only: list[str] | None = None) -> list:
    """``RunnerDeployment`` objects of :func:`deployment_specs`.

    Without ``work_pool`` they are for ``prefect.serve`` (the flow runs in the serving process's
    environment); with it, for ``prefect.deploy`` to a worker that has corpus-search installed: the
    entrypoint is a module path, so no code storage is needed.
    """
    from prefect.client.schemas.objects import (
        ConcurrencyLimitConfig,
        ConcurrencyLimitStrategy,
    )
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.deployments.runner import EntrypointType

    extra: dict[str, Any] = {}
    if work_pool:
        extra = {
            "work_pool_name": work_pool,
            "entrypoint_type": EntrypointType.MODULE_PATH,
            # No working_dir: a process worker runs each flow in a temporary folder it deletes, so every path
            # (sources, the database) is an absolute parameter; base_dir may not even exist on the worker's host.
            "job_variables": {"env": {"PREFECT_LOGGING_EXTRA_LOGGERS": EXTRA_LOGGERS}},
        }
    return [
        _flow_function(spec.flow).to_deployment(
            name=spec.name,
            description=spec.description,
            schedules=[CronSchedule(cron=spec.cron, timezone=spec.timezone)],
            paused=spec.paused,
            parameters=spec.parameters,
            tags=spec.tags,
            # One run per deployment at a time; a run that collides waits in the queue (AwaitingConcurrencySlot).
            concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
            **extra,
        )
        for spec in deployment_specs(cfg, only=only)
    ]


YAML_HEADER = """\
# GENERATED from the collections config by `corpus-search deploy --write-yaml PATH` - do not edit by hand:
# change the config and generate it again.
#
# Work-pool route, for a server: from the repository root (the entrypoints are paths under it; the sources
# and the database are absolute, resolved under the config's base_dir when it was generated),
#   prefect work-pool create corpus-search --type process
#   prefect deploy --all --prefect-file PATH
#   prefect worker start --pool corpus-search
#   prefect deployment run 'index-corpus/reindex-nightly'
"""


def render_prefect_yaml(cfg: DeployConfig, *, work_pool: str = "corpus-search", only: list[str] | None = None) -> str:
    """A ``prefect.yaml`` for ``prefect deploy --all`` with the deployments of :func:`deployment_specs`
    (those of the collections/evaluations in ``only``, as ``deploy -c`` registers them).

    Paths are absolute, resolved under ``base_dir`` as the other routes resolve them: ``prefect deploy``'s
    default pull step makes the flow runs' working directory the one it ran in, which need not be ``base_dir``
    (relative paths read and wrote there, so the two routes disagreed).
    """
    import yaml

    pool = {"name": work_pool, "job_variables": {"env": {"PREFECT_LOGGING_EXTRA_LOGGERS": EXTRA_LOGGERS}}}
    deployments = [
        {
            "name": spec.name,
            "description": spec.description,
            "entrypoint": spec.entrypoint,
            "tags": spec.tags,
            "parameters": spec.parameters,
            "schedules": [{"cron": spec.cron, "timezone": spec.timezone, "active": not spec.paused}],
            "concurrency_limit": {"limit": 1, "collision_strategy": "ENQUEUE"},
            "work_pool": copy.deepcopy(pool),
        }
        for spec in deployment_specs(cfg, only=only)
    ]
    doc = {"name": "corpus-search", "prefect-version": ">=3.4", "deployments": deployments}
    return YAML_HEADER + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=110)
