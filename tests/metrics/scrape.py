"""Scrape a /metrics endpoint on loopback and look up samples by name and labels."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

# An empty ProxyHandler keeps an http_proxy variable from routing loopback requests elsewhere.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def fetch(url: str) -> tuple[int, str]:
    """Return the HTTP status and body of a GET."""
    with _OPENER.open(url, timeout=10) as response:
        return int(response.status), response.read().decode("utf-8")


def scrape(url: str) -> Samples:
    """GET ``url``, check for 200, and parse every sample with prometheus-client's parser."""
    status, body = fetch(url)
    assert status == 200, f"{url} returned HTTP {status}"
    samples: Samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """Return the sample with exactly these labels, or None when it is missing."""
    return samples.get((name, frozenset(labels.items())))


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}
