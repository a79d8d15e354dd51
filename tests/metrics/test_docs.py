"""docs/monitoring.md lists every metric that pyqueue serves, and its alert rules parse."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from prometheus_client.metrics_core import Metric

from pyqueue.metrics import ClusterSnapshot, ProcessMetrics
from pyqueue.metrics.cluster import families
from pyqueue.metrics.server import BuildInfoCollector

DOC = Path(__file__).resolve().parents[2] / "docs" / "monitoring.md"


def exposed_name(family: Metric) -> str:
    return family.name + "_total" if family.type == "counter" else family.name


def served_names() -> set[str]:
    process = list(ProcessMetrics().registry.collect())
    cluster = families(ClusterSnapshot(), up=True, seconds=0.0)
    build = list(BuildInfoCollector().collect())
    return {exposed_name(family) for family in process + cluster + build}


def documented_names(text: str) -> set[str]:
    return set(re.findall(r"^\| `(pyqueue_[a-z_]+)` \|", text, re.MULTILINE))


def alert_rules(text: str) -> dict[str, dict[str, object]]:
    block = text.split("## Alert rules", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    groups = yaml.safe_load(block)["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def test_docs_list_every_metric() -> None:
    text = DOC.read_text(encoding="utf-8")

    assert served_names() - documented_names(text) == set()
    assert documented_names(text) - served_names() == set()


def test_docs_alert_rules() -> None:
    rules = alert_rules(DOC.read_text(encoding="utf-8"))
    known = served_names()

    assert rules["PyqueueQueueBacklog"]["expr"] == "pyqueue_queue_size > 1000"
    assert rules["PyqueueQueueBacklog"]["for"] == "10m"
    assert "> 0.05" in str(rules["PyqueueHighFailureRate"]["expr"])
    assert "pyqueue_dead_jobs" in str(rules["PyqueueDeadSetGrowing"]["expr"])
    assert rules["PyqueueNoLiveProcess"]["expr"] == "pyqueue_processes == 0"
    for name, rule in rules.items():
        used = set(re.findall(r"pyqueue_[a-z_]+", str(rule["expr"])))
        assert used <= known, f"{name} uses metrics that pyqueue does not serve: {used - known}"
