"""ipywidgets for readers who would rather click than type.

Every widget only calls the ``Lab`` methods a reader could call in a cell (noted in each
docstring), and writes what it shows into an ``Output``, so it works the same in JupyterLab
and headless under pytest (set ``.value``, call ``.click()``).
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import ipywidgets as w

from .errors import KubenetError
from .responses import Responses

if TYPE_CHECKING:
    from .lab import Lab

__all__ = ["bars_html", "RequestsChart", "ReplicasSlider", "ControlPanel"]


def bars_html(responses: Responses) -> str:
    """A small horizontal bar chart of who answered, as HTML (no plotting library)."""
    rows = []
    for pod, n in sorted(responses.counts.items()):
        pct = 100 * n / responses.sent if responses.sent else 0
        rows.append(
            f"<tr><td style='padding-right:1em'><code>{html.escape(pod)}</code></td>"
            f"<td style='width:24em'><div style='background:#326ce5;height:1em;"
            f"width:{pct:.1f}%'></div></td><td style='padding-left:.5em'>{n} "
            f"({pct:.0f}%)</td></tr>")
    failed = f", {responses.failed} failed" if responses.failed else ""
    return (f"<div><b>{responses.answered} of {responses.sent} requests answered{failed}"
            f"</b><table>{''.join(rows)}</table></div>")


def _show_error(out: w.Output, err: KubenetError) -> None:
    out.append_stdout(str(err) + "\n")


def _replace(out: w.Output, *objects: object) -> None:
    """Show ``objects`` in ``out`` instead of what it showed (works outside a kernel too)."""
    out.outputs = ()
    for obj in objects:
        out.append_display_data(obj)


class RequestsChart(w.VBox):
    """Send N requests through a Service and watch who answers, in batches.

    Plain Python: ``lab.send_requests(pod, target, count=N)``.
    """

    def __init__(self, lab: Lab, pod: str, target: str, count: int = 100,
                 batch: int = 10) -> None:
        self.lab, self.pod, self.target, self.batch = lab, pod, target, batch
        self.count = w.IntSlider(value=count, min=10, max=500, step=10,
                                 description="requests")
        self.button = w.Button(description="Send", icon="paper-plane")
        self.chart = w.HTML()
        self.out = w.Output()
        self.total = Responses(0)
        self.button.on_click(self._send)
        super().__init__([w.HBox([self.count, self.button]), self.chart, self.out])

    def _send(self, _button: w.Button | None = None) -> None:
        self.total = Responses(0)
        left = self.count.value
        try:
            while left > 0:
                n = min(self.batch, left)
                got = self.lab.send_requests(self.pod, self.target, count=n)
                self.total.sent += got.sent
                self.total.counts.update(got.counts)
                self.chart.value = bars_html(self.total)
                left -= n
        except KubenetError as err:
            _show_error(self.out, err)

    def click(self) -> None:
        self.button.click()


class ReplicasSlider(w.VBox):
    """Scale a Deployment and redraw the node's chain graph with its probabilities.

    Plain Python: ``lab.scale(name, n)`` then ``lab.draw_rules(node)``.
    """

    def __init__(self, lab: Lab, deployment: str = "service-test", node: str = "node1",
                 start: int = 2) -> None:
        self.lab, self.deployment, self.node = lab, deployment, node
        self.slider = w.IntSlider(value=start, min=0, max=8, description="replicas",
                                  continuous_update=False)
        self.graph = w.Output()
        self.slider.observe(self._scaled, names="value")
        super().__init__([self.slider, self.graph])
        self._draw()

    def _scaled(self, change: dict) -> None:
        try:
            self.lab.scale(self.deployment, change["new"])
        except KubenetError as err:
            _show_error(self.graph, err)
            return
        self._draw()

    def _draw(self) -> None:
        _replace(self.graph, self.lab.draw_rules(self.node))


class ControlPanel(w.VBox):
    """Break things and watch: delete a pod, fail its readiness, stop kube-proxy, switch mode;
    after each, the pods, the endpoints and the chosen node's rules are drawn again.

    Plain Python: ``lab.delete_pod``, ``lab.probe("fail"|"heal", pod)``,
    ``lab.kube_proxy("stop"|"start", node)``, ``lab.set_proxy_mode(mode)``.
    """

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.pod = w.Dropdown(description="pod")
        self.node = w.Dropdown(description="node", options=self._nodes())
        self.mode = w.ToggleButtons(options=["iptables", "nftables", "userspace"],
                                    value=lab.info()["proxy_mode"], description="kube-proxy")
        self.buttons = {
            "delete": w.Button(description="Delete pod", icon="trash"),
            "fail": w.Button(description="Fail readiness", icon="heartbeat"),
            "heal": w.Button(description="Heal", icon="medkit"),
            "stop": w.Button(description="Stop kube-proxy", icon="stop"),
            "start": w.Button(description="Start kube-proxy", icon="play"),
        }
        self.status = w.Output()
        self.messages = w.Output()
        for name, button in self.buttons.items():
            button.on_click(lambda _b, name=name: self.act(name))
        self.mode.observe(lambda change: self.act("mode", change["new"]), names="value")
        super().__init__([
            w.HBox([self.pod, self.buttons["delete"], self.buttons["fail"],
                    self.buttons["heal"]]),
            w.HBox([self.node, self.buttons["stop"], self.buttons["start"]]),
            self.mode, self.messages, self.status])
        self.refresh()

    def _nodes(self) -> list[str]:
        return [n["name"] for n in self.lab.info()["nodes"]]

    def act(self, action: str, value: str = "") -> None:
        """What each button does; call it directly to drive the panel from code."""
        try:
            if action == "delete":
                result = self.lab.delete_pod(self.pod.value)
            elif action in ("fail", "heal"):
                result = self.lab.probe(action, self.pod.value)
            elif action in ("stop", "start"):
                result = self.lab.kube_proxy(action, self.node.value)
            elif action == "mode":
                result = self.lab.set_proxy_mode(value)
            else:
                raise ValueError(action)
        except KubenetError as err:
            result = str(err)
        self.messages.append_stdout((result if isinstance(result, str) else
                                     "\n".join(result)) + "\n")
        self.refresh()

    def refresh(self) -> None:
        pods = [p["metadata"]["name"] for p in self.lab.pods()
                if p["status"]["phase"] == "Running"]
        current = self.pod.value
        self.pod.options = pods
        if current in pods:
            self.pod.value = current
        _replace(self.status, self.lab.get("pods", output="wide"), self.lab.get("endpoints"),
                 self.lab.draw_rules(self.node.value or "node1"))
