"""Prometheus metrics: per-process job metrics, cluster metrics from Redis, the endpoint.

A worker calls ``start_process_metrics``; a supervisor of several processes
calls ``prepare_multiprocess_dir``, ``start_host_metrics`` and
``child_exited``; ``pyqueue metrics serve`` runs a standalone exporter of the
``ClusterCollector``. docs/monitoring.md lists every metric.
"""

from __future__ import annotations

from pyqueue.metrics.cluster import ClusterCollector, ClusterSnapshot, cluster_client
from pyqueue.metrics.multiprocess import child_exited, prepare_multiprocess_dir
from pyqueue.metrics.process import ProcessMetrics
from pyqueue.metrics.server import (
    MetricsServer,
    ProcessEndpoint,
    serving_registry,
    start_host_metrics,
    start_process_metrics,
)

__all__ = [
    "ClusterCollector",
    "ClusterSnapshot",
    "MetricsServer",
    "ProcessEndpoint",
    "ProcessMetrics",
    "child_exited",
    "cluster_client",
    "prepare_multiprocess_dir",
    "serving_registry",
    "start_host_metrics",
    "start_process_metrics",
]
