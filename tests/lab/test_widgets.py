"""The widgets, driven headless as a reader would click them."""

import pytest

import kubenet
from kubenet.widgets import ControlPanel, RequestsChart, bars_html

SERVERS = ["service-test-6ffd9ddbbf-kf4j2", "service-test-6ffd9ddbbf-qs2j6"]


@pytest.fixture(scope="module")
def lab():
    with kubenet.Lab("article") as lab:
        yield lab


def test_requests_chart_counts_both_pods(lab):
    chart = RequestsChart(lab, SERVERS[0], "service-test:80", count=40, batch=20)
    chart.click()
    assert chart.total.sent == 40 and chart.total.failed == 0
    assert set(chart.total.counts) == set(SERVERS)
    assert "40 of 40 requests answered" in chart.chart.value
    assert all(pod in chart.chart.value for pod in SERVERS)


def test_control_panel_buttons_change_the_lab(lab):
    panel = ControlPanel(lab)
    assert set(SERVERS) <= set(panel.pod.options)
    panel.node.value = "node1"
    panel.buttons["stop"].click()
    assert "stopped" in panel.messages.outputs[-1]["text"]
    panel.buttons["start"].click()
    panel.pod.value = SERVERS[1]
    panel.buttons["delete"].click()
    names = [p["metadata"]["name"] for p in lab.pods()]
    assert SERVERS[1] not in names and len([n for n in names if "6ffd9ddbbf" in n]) == 2
    assert SERVERS[1] not in panel.pod.options  # the dropdown follows the lab


def test_bars_html_is_plain_html():
    from collections import Counter

    from kubenet.responses import Responses

    page = bars_html(Responses(10, Counter({"a": 6, "b": 4})))
    assert "10 of 10 requests answered" in page and "60%" in page and "40%" in page


def test_control_panel_redraws_the_rules_of_the_chosen_node(lab):
    panel = ControlPanel(lab)
    panel.node.value = "node2"
    panel.buttons["stop"].click()
    panel.buttons["start"].click()
    shown = [o["data"] for o in panel.status.outputs]
    assert any("image/svg+xml" in d and "node2" in d["image/svg+xml"] for d in shown)
