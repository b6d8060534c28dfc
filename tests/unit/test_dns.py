"""kubenet.dns: records from Services, and the resolver's answers (through dnslib)."""

import json
import os
import selectors
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from kubenet.dns import CLUSTER_DOMAIN, TTL, Resolver, main, records_for

ROOT = Path(__file__).resolve().parents[2]

RECORDS = {
    "service-test.default.svc.cluster.local.": "10.3.241.152",
    "kube-dns.kube-system.svc.cluster.local.": "10.3.240.10",
}


def svc(name, namespace="default", cluster_ip="10.3.240.20"):
    spec = {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}], "type": "ClusterIP"}
    if cluster_ip is not None:
        spec["clusterIP"] = cluster_ip
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


# -- records_for ----------------------------------------------------------------------------

def test_records_for_services():
    assert records_for([svc("service-test", cluster_ip="10.3.241.152"),
                        svc("kube-dns", "kube-system", "10.3.240.10")]) == RECORDS


@pytest.mark.parametrize("cluster_ip", ["None", "", None])
def test_records_for_skips_services_without_a_cluster_ip(cluster_ip):
    assert records_for([svc("headless", cluster_ip=cluster_ip), svc("web")]) == {
        "web.default.svc.cluster.local.": "10.3.240.20"}


def test_records_for_nothing():
    assert records_for([]) == {}


def test_same_name_in_two_namespaces_gives_two_records():
    records = records_for([svc("web", "a", "10.3.240.21"), svc("web", "b", "10.3.240.22")])
    assert records == {"web.a.svc.cluster.local.": "10.3.240.21",
                       "web.b.svc.cluster.local.": "10.3.240.22"}


def test_cluster_domain():
    assert CLUSTER_DOMAIN == "cluster.local"


# -- Resolver -------------------------------------------------------------------------------

def write_records(path, records):
    """As the lab writes them: to a temporary file, then renamed over the old one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(records, indent=1, sort_keys=True))
    tmp.replace(path)


@pytest.fixture
def records_file(tmp_path):
    path = tmp_path / "records.json"
    write_records(path, RECORDS)
    return path


@pytest.fixture
def resolver(records_file):
    return Resolver(str(records_file))


def ask(resolver, name, qtype="A"):
    request = DNSRecord.question(name, qtype)
    reply = resolver.resolve(request, None)
    assert reply.header.id == request.header.id
    assert reply.header.qr == 1
    assert str(reply.q.qname) == str(request.q.qname)
    return reply


def rcode(reply):
    return RCODE.get(reply.header.rcode)


def test_a_record_of_a_service(resolver):
    reply = ask(resolver, "service-test.default.svc.cluster.local")
    assert rcode(reply) == "NOERROR"
    assert len(reply.rr) == 1
    rr = reply.rr[0]
    assert (str(rr.rname), QTYPE.get(rr.rtype), str(rr.rdata), rr.ttl) == (
        "service-test.default.svc.cluster.local.", "A", "10.3.241.152", TTL)
    assert TTL == 30


def test_fully_qualified_query(resolver):
    reply = ask(resolver, "kube-dns.kube-system.svc.cluster.local.")
    assert [str(rr.rdata) for rr in reply.rr] == ["10.3.240.10"]


def test_names_are_case_insensitive(resolver):
    reply = ask(resolver, "Service-Test.DEFAULT.svc.Cluster.Local")
    assert rcode(reply) == "NOERROR"
    assert [str(rr.rdata) for rr in reply.rr] == ["10.3.241.152"]


def test_any_query_gets_the_a_record(resolver):
    reply = ask(resolver, "service-test.default.svc.cluster.local", "ANY")
    assert [(QTYPE.get(rr.rtype), str(rr.rdata)) for rr in reply.rr] == [("A", "10.3.241.152")]


@pytest.mark.parametrize("qtype", ["AAAA", "TXT", "MX", "SRV", "CNAME"])
def test_other_types_of_a_known_name_get_no_answer(resolver, qtype):
    reply = ask(resolver, "service-test.default.svc.cluster.local", qtype)
    assert rcode(reply) == "NOERROR"
    assert reply.rr == []


@pytest.mark.parametrize("name", [
    "nope.default.svc.cluster.local",
    "service-test.other.svc.cluster.local",
    "service-test.default.cluster.local",
    "www.service-test.default.svc.cluster.local",
    "other.svc.cluster.local",
    "pod.cluster.local",
])
def test_unknown_names_in_the_cluster_domain_are_nxdomain(resolver, name):
    reply = ask(resolver, name)
    assert rcode(reply) == "NXDOMAIN"
    assert reply.rr == []


@pytest.mark.parametrize("qtype", ["A", "AAAA"])
def test_nxdomain_whatever_the_type(resolver, qtype):
    assert rcode(ask(resolver, "nope.default.svc.cluster.local", qtype)) == "NXDOMAIN"


@pytest.mark.parametrize("name", ["default.svc.cluster.local", "kube-system.svc.cluster.local",
                                  "svc.cluster.local", "cluster.local"])
def test_parents_of_known_names_exist_but_have_no_records(resolver, name):
    reply = ask(resolver, name)
    assert rcode(reply) == "NOERROR"
    assert reply.rr == []


@pytest.mark.parametrize("name", ["example.com", "kubernetes.io", "localhost", "local",
                                  "cluster.local.example.com", "svc.cluster"])
def test_names_outside_the_cluster_domain_are_refused(resolver, name):
    reply = ask(resolver, name)
    assert rcode(reply) == "REFUSED"
    assert reply.rr == []


# "mycluster.local." ends with the characters "cluster.local." but is not in the zone
# cluster.local (zones match whole labels).
@pytest.mark.parametrize("name", ["mycluster.local", "web.default.svc.mycluster.local"])
def test_a_name_merely_ending_in_cluster_local_is_refused(resolver, name):
    assert rcode(ask(resolver, name)) == "REFUSED"


def test_missing_records_file_means_no_services(tmp_path):
    resolver = Resolver(str(tmp_path / "absent.json"))
    assert resolver.records() == {}
    assert rcode(ask(resolver, "service-test.default.svc.cluster.local")) == "NXDOMAIN"
    assert rcode(ask(resolver, "example.com")) == "REFUSED"


def test_file_created_later_is_read(tmp_path):
    path = tmp_path / "records.json"
    resolver = Resolver(str(path))
    assert rcode(ask(resolver, "service-test.default.svc.cluster.local")) == "NXDOMAIN"
    write_records(path, RECORDS)
    assert rcode(ask(resolver, "service-test.default.svc.cluster.local")) == "NOERROR"


def bump_mtime(path, seconds=5):
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 1_000_000_000))


def test_records_file_is_re_read_when_it_changes(resolver, records_file):
    assert rcode(ask(resolver, "web.default.svc.cluster.local")) == "NXDOMAIN"
    write_records(records_file, {**RECORDS, "web.default.svc.cluster.local.": "10.3.240.20"})
    bump_mtime(records_file)  # a different mtime whatever the file system's granularity
    assert [str(rr.rdata) for rr in ask(resolver, "web.default.svc.cluster.local").rr] == [
        "10.3.240.20"]

    write_records(records_file, {"web.default.svc.cluster.local.": "10.3.240.21"})
    bump_mtime(records_file, 10)
    assert rcode(ask(resolver, "service-test.default.svc.cluster.local")) == "NXDOMAIN"
    assert [str(rr.rdata) for rr in ask(resolver, "web.default.svc.cluster.local").rr] == [
        "10.3.240.21"]


def test_records_are_cached_while_the_file_is_unchanged(resolver):
    first = resolver.records()
    assert first == RECORDS
    assert resolver.records() is first


def test_records_are_kept_if_the_file_disappears(resolver, records_file):
    assert resolver.records() == RECORDS
    records_file.unlink()
    assert resolver.records() == RECORDS
    assert rcode(ask(resolver, "service-test.default.svc.cluster.local")) == "NOERROR"


# The lab rewrites the file by renaming a new one over it. On a file system whose timestamps
# are coarse (a kernel tick), two writes in quick succession can carry the same mtime.
def test_a_replaced_file_with_the_same_mtime_is_re_read(resolver, records_file):
    assert resolver.records() == RECORDS
    mtime = os.stat(records_file).st_mtime_ns
    write_records(records_file, {**RECORDS, "web.default.svc.cluster.local.": "10.3.240.20"})
    os.utime(records_file, ns=(mtime, mtime))
    assert rcode(ask(resolver, "web.default.svc.cluster.local")) == "NOERROR"


# -- the server, over UDP and TCP on 127.0.0.1 ---------------------------------------------

def free_port():
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def test_server_answers_over_udp_and_tcp(records_file):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubenet.dns", "--records", str(records_file), "--port",
         str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            assert sel.select(timeout=10), "the DNS server did not start"
        assert proc.stdout.readline().strip() == (
            f"serving DNS for cluster.local on port {port} (UDP and TCP)")
        for tcp in (False, True):
            q = DNSRecord.question("service-test.default.svc.cluster.local")
            reply = DNSRecord.parse(q.send("127.0.0.1", port, tcp=tcp, timeout=5))
            assert reply.header.id == q.header.id
            assert [str(rr.rdata) for rr in reply.rr] == ["10.3.241.152"]
            q = DNSRecord.question("nope.default.svc.cluster.local")
            reply = DNSRecord.parse(q.send("127.0.0.1", port, tcp=tcp, timeout=5))
            assert RCODE.get(reply.header.rcode) == "NXDOMAIN"
            q = DNSRecord.question("example.com")
            reply = DNSRecord.parse(q.send("127.0.0.1", port, tcp=tcp, timeout=5))
            assert RCODE.get(reply.header.rcode) == "REFUSED"
        # the running server picks up a rewritten records file
        write_records(records_file, {**RECORDS, "web.default.svc.cluster.local.": "10.3.240.20"})
        bump_mtime(records_file)
        q = DNSRecord.question("web.default.svc.cluster.local")
        reply = DNSRecord.parse(q.send("127.0.0.1", port, tcp=False, timeout=5))
        assert [str(rr.rdata) for rr in reply.rr] == ["10.3.240.20"]
        assert proc.poll() is None
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_server_needs_a_records_file(capsys):
    with pytest.raises(SystemExit) as err:
        main([])
    assert err.value.code == 2
    assert "--records" in capsys.readouterr().err
