"""``kubenet``: the kubectl-shaped command line. Every failure is one line and exit 1."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from . import sandbox, state, tiers
from .errors import BadRequest, KubenetError, NotFound
from .printers import human_duration, render

__all__ = ["main"]


def _record(args: argparse.Namespace) -> state.LabRecord:
    """The running lab; when there is none, say why if this host cannot run labs at all."""
    try:
        return state.read_record(args.lab)
    except NotFound:
        tiers.require_tier()
        raise


def _read_manifest(path: str) -> tuple[str, str]:
    if path == "-":
        return sys.stdin.read(), "STDIN"
    try:
        with open(path) as f:
            return f.read(), path
    except OSError:
        raise BadRequest(f'error: the path "{path}" does not exist') from None


def cmd_doctor(args: argparse.Namespace) -> int:
    report = tiers.check()
    print(report)
    if not report.ok:
        print(f"kubenet cannot build a lab here: {report.reason or 'install the missing tools'}",
              file=sys.stderr)
    return 0 if report.ok else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_cli

    return run_cli(args)


def cmd_up(args: argparse.Namespace) -> int:
    start = time.monotonic()
    record, _ = sandbox.start(args.lab, owned=False, nodes=args.nodes, seed=args.seed,
                              proxy_mode=args.proxy_mode)
    try:
        lines = sandbox.call(record, "up", scenario=args.scenario)
    except BaseException:
        sandbox.stop(record)
        raise
    for line in lines:
        print(line)
    print(f'lab "{args.lab}" is up ({record.tier} tier, scenario {args.scenario}, '
          f"{time.monotonic() - start:.2f}s); end it with: kubenet down"
          + ("" if args.lab == state.DEFAULT_LAB else f" --lab {args.lab}"), file=sys.stderr)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    try:
        record = state.read_record(args.lab)
    except NotFound:
        print(f'lab "{args.lab}" is not running', file=sys.stderr)
        return 0  # idempotent
    sandbox.stop(record)
    print(f'lab "{args.lab}" deleted')
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    records = state.all_records()
    if not records:
        print("No labs running.")
        return 0
    rows = [["NAME", "TIER", "AGE", "OWNER"]]
    rows += [[r.name, r.tier, human_duration(time.time() - r.created),
              f"pid {r.owner_pid}" if r.owner_pid else "kubenet up"] for r in records]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    text, source = _read_manifest(args.filename)
    for line in sandbox.call(_record(args), "apply", text=text, source=source):
        print(line)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    record = _record(args)
    if args.filename:
        text, source = _read_manifest(args.filename)
        lines = sandbox.call(record, "delete", text=text, source=source)
    else:
        if not args.kind or not args.names:
            raise BadRequest("error: you must specify a resource and a name, or -f FILE")
        lines = []
        for name in args.names:
            lines += sandbox.call(record, "delete", kind=args.kind, name=name,
                                  namespace=args.namespace)
    for line in lines:
        print(line)
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    snapshot = sandbox.call(_record(args), "snapshot")
    if args.resource in ("endpoints", "endpoint", "ep"):
        print("Warning: v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 "
              "EndpointSlice", file=sys.stderr)
    print(render(snapshot, args.resource, args.output or "", args.name or "", args.namespace,
                 args.all_namespaces))
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    print(sandbox.call(_record(args), "describe", kind=args.kind, name=args.name,
                       namespace=args.namespace))
    return 0


def cmd_rules(args: argparse.Namespace) -> int:
    reply = sandbox.call(_record(args), "rules", node=args.node, table=args.table or "",
                         counters=args.counters)
    sys.stdout.write(reply["text"])
    for note in reply["notes"]:
        print(f"# kubenet: {note}", file=sys.stderr)
    if not reply["running"]:
        print(f"# kubenet: kube-proxy on {args.node} is stopped; these rules are what it "
              "left behind", file=sys.stderr)
    return 0


def cmd_render_iptables(args: argparse.Namespace) -> int:
    from .kubeproxy import iptables, nftables

    text, _ = _read_manifest(args.filename)
    try:
        if args.command == "render-nftables":
            out = nftables.render_yaml(text, node_name=args.node_name, node_ips=[args.node_ip],
                                       cluster_cidr=args.cluster_cidr,
                                       service_cidrs=args.service_cidr or ())
        else:
            out = iptables.render_yaml(text, node_name=args.node_name, node_ips=[args.node_ip],
                                       cluster_cidr=args.cluster_cidr)
    except (ValueError, KeyError, TypeError) as err:
        raise BadRequest(f"error: cannot render {args.filename}: {err}") from None
    sys.stdout.write(out)
    return 0


def cmd_proxy_mode(args: argparse.Namespace) -> int:
    print(sandbox.call(_record(args), "proxy_mode", mode=args.mode))
    return 0


def cmd_drain(args: argparse.Namespace) -> int:
    for line in sandbox.call(_record(args), "drain", node=args.node):
        print(line)
    return 0


def cmd_uncordon(args: argparse.Namespace) -> int:
    print(sandbox.call(_record(args), "uncordon", node=args.node))
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    print(sandbox.call(_record(args), "probe", action=args.action, name=args.pod,
                       namespace=args.namespace))
    return 0


def cmd_kube_proxy(args: argparse.Namespace) -> int:
    print(sandbox.call(_record(args), "kube_proxy", action=args.action, node=args.node))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    text = sandbox.call(_record(args), "logs", name=args.pod, namespace=args.namespace,
                        container=args.container, previous=args.previous)
    sys.stdout.write(text)
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    argv: list[str] = args.command
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise BadRequest("error: you must specify at least one command for the container")
    sys.stdout.flush()
    reply = sandbox.call(_record(args), "exec", fds=[0, 1, 2], target=args.target, argv=argv,
                         namespace=args.namespace)
    return int(reply["returncode"])


def cmd_scale(args: argparse.Namespace) -> int:
    if args.kind not in ("deployment", "deploy", "deployments"):
        raise BadRequest(f'error: the server doesn\'t have a resource type "{args.kind}"')
    print(sandbox.call(_record(args), "scale", name=args.name, replicas=args.replicas))
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    import json

    from .trace import Trace

    result = Trace.from_wire(sandbox.call(_record(args), "trace", source=args.source,
                                          dest=args.dest, namespace=args.namespace))
    if args.json:
        print(result.headline(), file=sys.stderr)
        for note in result.notes:
            print(f"note: {note}", file=sys.stderr)
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(result.text())
    return 0


def cmd_transcript(args: argparse.Namespace) -> int:
    print("\n".join(sandbox.call(_record(args), "transcript")))
    return 0


def _write_diagram(diagram: Any, output: str | None, fmt: str | None) -> int:
    fmt = fmt or (os.path.splitext(output)[1].lstrip(".") if output else "") or "svg"
    data = diagram.pipe(fmt)
    if output and output != "-":
        with open(output, "wb") as f:
            f.write(data)
        print(f"wrote {output} ({diagram.summary})", file=sys.stderr)
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
    return 0


def cmd_draw(args: argparse.Namespace) -> int:
    from .lab import Lab

    tiers.require_tier()
    return _write_diagram(Lab.attach(args.lab).draw(), args.output, args.format)


def cmd_draw_rules(args: argparse.Namespace) -> int:
    from .draw import draw_rules, read_dump
    from .lab import Lab

    if args.source:
        text = sys.stdin.read() if args.source == "-" else read_dump(args.source)
        diagram = draw_rules(text, node=args.node, table=args.table)
    elif args.node:
        tiers.require_tier()
        diagram = Lab.attach(args.lab).draw_rules(args.node, table=args.table)
    else:
        raise BadRequest("error: draw-rules needs a NODE of the lab, or --from FILE")
    return _write_diagram(diagram, args.output, args.format)


def build_parser() -> argparse.ArgumentParser:
    default_lab = os.environ.get("KUBENET_LAB", state.DEFAULT_LAB)
    lab_help = "which lab (default: $KUBENET_LAB or 'kubenet')"
    # --lab may come before or after the command; a subcommand's copy must not reset it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--lab", default=argparse.SUPPRESS, help=lab_help)
    ns = argparse.ArgumentParser(add_help=False)
    ns.add_argument("-n", "--namespace", default="default")

    parser = argparse.ArgumentParser(
        prog="kubenet", description="Kubernetes Services, built for real in network namespaces.")
    parser.add_argument("--lab", default=default_lab, help=lab_help)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Any, help_: str, *parents: argparse.ArgumentParser):
        p = sub.add_parser(name, help=help_, parents=[common, *parents])
        p.set_defaults(func=func)
        return p

    add("doctor", cmd_doctor, "tier, tools and kernel features; exit 0 iff a lab can run")
    p = add("bench", cmd_bench, "measure the data path in its own lab: direct to a pod vs "
            "through the cluster IP, per proxy mode; tables, JSON Lines, plots")
    from .bench import add_arguments as bench_arguments

    bench_arguments(p)
    p = add("up", cmd_up, "start a lab (the article's cluster by default)")
    p.add_argument("--scenario", default="article", choices=["article", "empty"])
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--proxy-mode", default="iptables",
                   choices=["iptables", "userspace", "nftables"],
                   help="kube-proxy's mode on every node (userspace: the article's 2015 design)")
    add("down", cmd_down, "end a lab: every namespace and process of it")
    add("list", cmd_list, "the labs running for this user")
    p = add("apply", cmd_apply, "create or update objects from a manifest", ns)
    p.add_argument("-f", "--filename", required=True, help="a YAML file, or - for stdin")
    p = add("delete", cmd_delete, "delete pods or deployments", ns)
    p.add_argument("kind", nargs="?")
    p.add_argument("names", nargs="*")
    p.add_argument("-f", "--filename")
    p = add("get", cmd_get, "list objects, like kubectl get", ns)
    p.add_argument("resource", help="pods | deployments | nodes")
    p.add_argument("name", nargs="?")
    p.add_argument("-o", "--output", help="wide | json | yaml | name")
    p.add_argument("-A", "--all-namespaces", action="store_true")
    p.epilog = "resources: pods, deployments, services, endpointslices, endpoints, nodes"
    p = add("describe", cmd_describe, "show a service in detail, like kubectl describe", ns)
    p.add_argument("kind", help="service")
    p.add_argument("name")
    p = add("rules", cmd_rules, "iptables-save of a node: the rules kube-proxy wrote")
    p.add_argument("node")
    p.add_argument("-t", "--table", help="nat or filter (default: both)")
    p.add_argument("-c", "--counters", action="store_true", help="with packet counters")
    for mode, writes in (("iptables", "iptables-restore input"), ("nftables", "nft -f input")):
        p = add(f"render-{mode}", cmd_render_iptables,
                f"print what kube-proxy ({mode} mode) writes for Services and EndpointSlices "
                f"({writes})")
        p.add_argument("-f", "--filename", required=True, help="YAML of Services and "
                       "EndpointSlices (for example kubectl get svc,endpointslices -A -o yaml)")
        p.add_argument("--node-name", default="node1")
        p.add_argument("--node-ip", default="10.100.0.2")
        p.add_argument("--cluster-cidr", default=None)
        if mode == "nftables":
            p.add_argument("--service-cidr", action="append", metavar="CIDR",
                           help="a ServiceCIDR: unallocated cluster IPs in it are dropped "
                                "(repeatable)")
    p = add("proxy-mode", cmd_proxy_mode, "switch kube-proxy's mode on every node")
    p.add_argument("mode", choices=["iptables", "userspace", "nftables"])
    p = add("drain", cmd_drain, "cordon a node and move its pods to other nodes")
    p.add_argument("node")
    p = add("uncordon", cmd_uncordon, "let a drained node take pods again")
    p.add_argument("node")
    p = add("probe", cmd_probe, "make a pod's probes fail (their packets are dropped), or heal "
            "them", ns)
    p.add_argument("action", choices=["fail", "heal"])
    p.add_argument("pod")
    p = add("kube-proxy", cmd_kube_proxy, "stop or start kube-proxy on a node")
    p.add_argument("action", choices=["stop", "start"])
    p.add_argument("node")
    p = add("logs", cmd_logs, "a pod's output", ns)
    p.add_argument("pod")
    p.add_argument("-c", "--container")
    p.add_argument("-p", "--previous", action="store_true")
    p = add("exec", cmd_exec, "run a command in a running pod, a node or the gateway", ns)
    p.add_argument("target")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p = add("scale", cmd_scale, "set a deployment's replica count")
    p.add_argument("kind")
    p.add_argument("name")
    p.add_argument("--replicas", type=int, required=True)
    p = add("draw", cmd_draw, "the lab's topology, read from the kernel, as SVG")
    p.add_argument("-o", "--output", help="write to this file (default: stdout)")
    p.add_argument("--format", help="svg (default), png, pdf or dot; else the -o suffix")
    p = add("draw-rules", cmd_draw_rules, "a node's nat chains (or any iptables-save dump, "
            "or nft -j output) as SVG: KUBE-SERVICES -> KUBE-SVC -> KUBE-SEP -> DNAT, or "
            "services -> @service-ips -> service-... -> endpoint-... -> dnat; probabilities, "
            "counters")
    p.add_argument("node", nargs="?", help="a node of the lab (with --from: only a title)")
    p.add_argument("--from", dest="source", metavar="FILE",
                   help="an iptables-save [-c] dump or nft -j list table/ruleset output from "
                   "anywhere, or - for stdin")
    p.add_argument("-t", "--table", default="nat",
                   help="nat (default) or filter; nftables: also all")
    p.add_argument("-o", "--output", help="write to this file (default: stdout)")
    p.add_argument("--format", help="svg (default), png, pdf or dot; else the -o suffix")
    p = add("trace", cmd_trace, "send a real SYN and show its walk: hops, rules, conntrack", ns)
    p.add_argument("source", metavar="FROM", help="a running pod, a node, gateway or external")
    p.add_argument("dest", metavar="DEST:PORT", help="an address or a Service name, and a port")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    add("transcript", cmd_transcript, "the ip/sysctl commands that built the lab")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KubenetError as err:
        print(str(err).splitlines()[0] if str(err) else "error", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 141


if __name__ == "__main__":
    sys.exit(main())
