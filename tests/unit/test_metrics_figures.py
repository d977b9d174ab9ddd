"""/metrics figures without sockets: what the data path counts, the figures as plain data, the
sum over processes, and the text a Prometheus parser reads back."""

from __future__ import annotations

import json
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from pyproxy.admin.metrics import collect, merge, render
from pyproxy.pool.figures import BOUNDS, Figures
from pyproxy.proto import messages as m
from pyproxy.proto.codes import IDLE, IN_TRANSACTION
from tests.support.fakes import POOL_SIZE, transactions, world

POOL = "bench_tx"
QUERY = m.query("SELECT 1")


def _figures(count: int, metrics: bool = True) -> dict[str, Any]:
    """The figures after ``count`` one-query transactions of 10 clients of a fake pool."""
    servers, clients = world(10, metrics=metrics)
    for client in clients:
        client.data_received(QUERY)
    transactions(servers, QUERY, count)
    registry = clients[0].proxy.registry
    return collect(registry, len(clients), per_transaction=metrics)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted({"pool": POOL, **labels}.items())))]


async def test_every_transaction_is_counted_once_on_the_fast_lane() -> None:
    figs = _figures(500)
    (pool,) = figs["pools"]
    # Each client's first request goes too: 500 answered plus those still running.
    xacts = sum(pool["transaction"]["counts"])
    assert xacts == sum(pool["query"]["counts"])
    assert 500 <= xacts <= 500 + POOL_SIZE
    assert pool["received_bytes"] % len(QUERY) == 0
    assert pool["received_bytes"] >= len(QUERY) * xacts
    assert pool["sent_bytes"] > 0


async def test_figures_are_plain_data_that_processes_add_up() -> None:
    one = _figures(300)
    assert json.loads(json.dumps(one)) == one
    two = merge([one, json.loads(json.dumps(one))])
    (a,), (b,) = one["pools"], two["pools"]
    assert b["transaction"]["counts"] == [2 * c for c in a["transaction"]["counts"]]
    assert b["clients"] == {k: 2 * v for k, v in a["clients"].items()}
    assert b["size"] == a["size"]
    assert two["clusters"][0]["budget"] == one["clusters"][0]["budget"]
    assert two["clients"] == 2 * one["clients"]
    samples = _samples(render(two))
    count = _value(samples, "pyproxy_pool_transaction_duration_seconds_count")
    assert count == 2 * sum(a["transaction"]["counts"])
    assert _value(samples, "pyproxy_pool_transactions_total") == count


async def test_rendered_text_parses_and_buckets_are_cumulative() -> None:
    figs = _figures(200)
    text = render(figs)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    hist = families["pyproxy_pool_query_duration_seconds"]
    assert hist.type == "histogram"
    buckets = [s for s in hist.samples if s.name.endswith("_bucket")]
    assert [s.labels["le"] for s in buckets] == [repr(float(b)) for b in BOUNDS] + ["+Inf"]
    counts = [s.value for s in buckets]
    assert counts == sorted(counts)
    assert families["pyproxy_pool_transactions"].type == "counter"
    assert families["pyproxy_pool_clients"].type == "gauge"


async def test_metrics_off_leaves_out_the_per_transaction_figures() -> None:
    figs = _figures(100, metrics=False)
    names = {f.name for f in text_string_to_metric_families(render(figs))}
    assert "pyproxy_pool_transaction_duration_seconds" not in names
    assert "pyproxy_pool_received_bytes" not in names
    assert "pyproxy_pool_wait_seconds" in names
    assert "pyproxy_pool_servers" in names


def test_a_longer_transaction_counts_each_query_and_itself_once() -> None:
    f = Figures()
    f.ready(IN_TRANSACTION, 1.0, 1.0, 1.0)  # BEGIN, answered at once
    f.ready(IN_TRANSACTION, 1.002, 1.001, 1.0)  # a query of 1 ms
    f.ready(IDLE, 1.004, 1.003, 1.0)  # COMMIT, 1 ms; the transaction took 4 ms
    f.ready(IDLE, 2.0005, 2.0, 2.0)  # a one-query transaction of 0.5 ms
    assert sum(f.one) == 1 and sum(f.xact) == 1 and sum(f.query) == 3
    assert abs(f.xact_sum - 0.004) < 1e-9
    assert abs(f.query_sum - 0.002) < 1e-9


def test_a_query_that_waited_in_the_queue_counts_from_when_it_was_sent() -> None:
    f = Figures()
    # query_start was set back to when it arrived (5.0); it went to the server at 5.3
    f.ready(IDLE, 5.301, 5.0, 5.3)
    assert sum(f.one) == 1
    assert abs(f.one_sum - 0.001) < 1e-9


def test_server_errors_count_by_sqlstate_class() -> None:
    f = Figures()
    body = m.error_response("22012", "division by zero")[5:]
    f.server_error(body, 0, len(body))
    f.error("57014", "pyproxy")
    assert f.errors == {("server", "22"): 1, ("pyproxy", "57"): 1}


async def test_merge_adds_keyed_counters_a_process_lacks() -> None:
    quiet, busy = _figures(10), _figures(10)
    busy["pools"][0]["errors"] = [["pyproxy", "57", 2], ["server", "22", 1]]
    quiet["pools"][0]["errors"] = [["server", "22", 3]]
    busy["pools"][0]["cancels"] = [["forwarded", 4]]
    (pool,) = merge([quiet, busy])["pools"]
    assert pool["errors"] == [["pyproxy", "57", 2], ["server", "22", 4]]
    assert pool["cancels"] == [["forwarded", 4]]
    samples = _samples(render(merge([busy, quiet])))
    assert _value(samples, "pyproxy_pool_errors_total", origin="server", sqlstate_class="22") == 4
