"""Exercise checks for the notebooks: each looks at the live lab and says what it sees."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .lab import Lab

__all__ = ["Check", "client_reached", "rules_walked"]


@dataclass
class Check:
    passed: bool
    message: str

    def __repr__(self) -> str:
        return ("Well done: " if self.passed else "Not yet: ") + self.message


def client_reached(lab: Lab, server_prefix: str = "service-test-") -> Check:
    """Has some finished client pod received a greeting from a server pod that runs now?"""
    pods = lab.pods()
    servers = {p["metadata"]["name"] for p in pods
               if p["metadata"]["name"].startswith(server_prefix)
               and p["status"]["phase"] == "Running"}
    for p in pods:
        name = p["metadata"]["name"]
        if p["status"]["phase"] != "Succeeded":
            continue
        log = lab.logs(name)
        for server in servers:
            if f"Hello from {server}" in log:
                return Check(True, f"{name} got an answer from {server}.")
    return Check(False, "no finished client pod has an answer from a running server pod yet. "
                 "Apply a client that asks a server pod's current IP.")


def endpoints_count(lab: Lab, service: str, expected: int) -> Check:
    """Does the Service list ``expected`` ready endpoints?"""
    found = lab.endpoints(service)
    if len(found) == expected:
        return Check(True, f"{service} lists {expected} endpoints: {', '.join(found)}.")
    return Check(False, f"{service} lists {len(found)} ready endpoint(s), not {expected}. "
                 "Change the lab as the exercise asks, then run this check again.")


def probabilities(lab: Lab, node: str, chain: str) -> Check:
    """Do the probabilities in ``chain`` give every endpoint the same share?"""
    import re

    rules = str(lab.rules(node, table="nat").grep(f"-A {chain} ")).splitlines()
    jumps = [r for r in rules if "-j KUBE-SEP-" in r]
    found = [float(m.group(1)) if (m := re.search(r"--probability (\S+)", r)) else 1.0
             for r in jumps]
    n = len(jumps)
    expected = [1 / (n - i) for i in range(n)]
    if n < 4:
        return Check(False, f"{chain} has {n} endpoint rule(s); scale the Deployment to 4.")
    if all(abs(a - b) < 1e-6 for a, b in zip(found, expected, strict=True)):
        shown = ", ".join(f"{p:.4f}" for p in found)
        return Check(True, f"{n} endpoints with probabilities {shown}: each gets 1/{n}.")
    return Check(False, f"unexpected probabilities {found}")


def service_works(lab: Lab, name: str, from_pod: str = "service-test-6ffd9ddbbf-kf4j2") -> Check:
    """Does Service ``name`` exist, have a cluster IP no device holds, and answer by name?"""
    import json

    listed = json.loads(str(lab.get("services", output="json")))["items"]
    services = [s for s in listed if s["metadata"]["name"] == name]
    if not services:
        return Check(False, f"there is no Service named {name} yet: apply one.")
    ip = services[0]["spec"]["clusterIP"]
    holders = lab.inventory().holders(ip)
    if holders:
        return Check(False, f"{ip} is held by {holders[0].ns} {holders[0].iface}?")
    port = services[0]["spec"]["ports"][0]["port"]
    answers = lab.send_requests(from_pod, f"{name}:{port}", count=4)
    if answers.answered == 0:
        return Check(False, f"{name} ({ip}) exists, but nothing answered on port {port}: "
                     "do its selector and targetPort match the server pods?")
    return Check(True, f"{name} got cluster IP {ip}, which no interface holds, and "
                 f"{answers.answered} of 4 requests were answered.")


def client_address_kept(lab: Lab, client: str = "service-test-6ffd9ddbbf-kf4j2",
                        server: str = "service-test-6ffd9ddbbf-qs2j6") -> Check:
    """Does ``server`` see ``client``'s own address when asked through the Service?"""
    client_ip = next(p["status"]["podIP"] for p in lab.pods()
                     if p["metadata"]["name"] == client)
    for _ in range(10):
        lab.send_requests(client, "service-test:80", count=1)
        last = lab.logs(server).splitlines()[-1:] or [""]
        if last[0].startswith(f"{client_ip} "):
            return Check(True, f"{server} saw {client_ip}: no second connection any more.")
    seen = last[0].split(" ")[0] if last[0] else "nothing"
    return Check(False, f"{server} last saw {seen}, not the client's {client_ip}.")


def nodeport_answers(lab: Lab, node_ip: str, port: int = 30080) -> Check:
    """Does the external client get an answer from ``node_ip:port``?"""
    ask = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {node_ip} {port}"
    out = lab.exec("external", "sh", "-c", ask).stdout
    if "Hello from" in out:
        pod = out.split("Hello from ")[1].split("<")[0]
        return Check(True, f"{node_ip}:{port} answered from outside (pod {pod}).")
    return Check(False, f"nothing answered on {node_ip}:{port} from outside.")


def default_gateway(lab: Lab, node: str, answer: str | None) -> Check:
    """Is ``answer`` the router of ``node``'s default route, as the kernel says?"""
    routes = lab.exec(node, "ip", "route", "show", "default").stdout.split()
    truth = routes[routes.index("via") + 1] if "via" in routes else ""
    if answer is None:
        return Check(False, "set answer to the address after 'via' in the default route.")
    if answer == truth:
        return Check(True, f"{node} sends everything it has no better route for to {truth}, "
                     "the gateway.")
    return Check(False, f"{answer} is not it: look for the line that starts with 'default'.")


def rules_walked(lab: Lab, node: str, answer: int | None) -> Check:
    """Is ``answer`` the number of rules a SYN to a pod IP is compared with in ``node``'s
    KUBE-SERVICES chain (all of them: it matches none)?"""
    rules = [line for line in str(lab.rules(node, table="nat")).splitlines()
             if line.startswith("-A KUBE-SERVICES ")]
    if not rules:
        return Check(False, f"{node} has no KUBE-SERVICES chain: put the lab in iptables mode "
                     "(lab.set_proxy_mode('iptables')) and give it the extra Services.")
    if answer is None:
        return Check(False, "set answer to the number of rules in KUBE-SERVICES on "
                     f"{node}: count them in lab.rules('{node}', table='nat').")
    if answer == len(rules):
        return Check(True, f"a SYN to a pod IP is compared with all {len(rules)} rules of "
                     "KUBE-SERVICES and matches none (the last one is for NodePorts, on the "
                     "node's own addresses). In nftables mode it is one lookup in service-ips.")
    return Check(False, f"{answer} is not what {node} holds now; count the lines that start "
                 "with '-A KUBE-SERVICES'.")
