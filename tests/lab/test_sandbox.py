"""The sandbox: the host never changes, and a lab leaves nothing behind however it ends."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hoststate import snapshot

import kubenet
from kubenet import state

ROOT = Path(__file__).resolve().parents[2]


def _pid_namespace_of_lab(record) -> str:
    """The PID namespace of the lab's agent (a child of the anchor)."""
    children = Path(f"/proc/{record.anchor_pid}/task/{record.anchor_pid}/children")
    (pid1,) = children.read_text().split()
    return os.readlink(f"/proc/{pid1}/ns/pid")


def _processes_in(pidns: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "ns" / "pid") == pidns:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _wait_gone(pidns: str, timeout: float = 10) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := _processes_in(pidns)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def test_host_is_unchanged_by_a_lab_and_its_end():
    before = snapshot()
    with kubenet.Lab("article") as lab:
        during = snapshot()
        assert lab.exec("node1", "ip", "-o", "link").returncode == 0
    after = snapshot()
    assert during == before
    assert after == before


def test_close_ends_every_lab_process():
    lab = kubenet.Lab("article")
    pidns = _pid_namespace_of_lab(lab._record)
    assert len(_processes_in(pidns)) >= 6  # init, agent, 2 servers, pause processes
    lab.close()
    assert _processes_in(pidns) == []
    lab.close()  # idempotent


def test_two_labs_side_by_side():
    with kubenet.Lab("article") as one, kubenet.Lab("article") as two:
        assert one.name != two.name
        assert one.pod_ips(app="service_test_pod") == two.pod_ips(app="service_test_pod")
        one.delete_pod("service-test-6ffd9ddbbf-kf4j2")
        assert "service-test-6ffd9ddbbf-kf4j2" in str(two.get("pods"))
        assert "service-test-6ffd9ddbbf-kf4j2" not in str(one.get("pods"))
        out = two.exec("service-test-6ffd9ddbbf-kf4j2", "sh", "-c",
                       "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 10.0.2.2 8080")
        assert "qs2j6" in out.stdout


def test_sigkill_of_the_anchor_removes_the_whole_lab(run_cli, lab_name):
    run_cli("up", lab=lab_name, check=True)
    record = state.read_record(lab_name)
    pidns = _pid_namespace_of_lab(record)
    os.kill(record.anchor_pid, signal.SIGKILL)
    assert _wait_gone(pidns) == []
    proc = run_cli("get", "pods", lab=lab_name)
    assert proc.returncode == 1 and "not running" in proc.stderr


def test_the_lab_of_a_killed_python_process_goes_with_it():
    code = ("import kubenet, sys; lab = kubenet.Lab('empty'); "
            "print(lab.name, flush=True); sys.stdin.read()")
    owner = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=ROOT)
    name = owner.stdout.readline().strip()
    record = state.read_record(name)
    pidns = _pid_namespace_of_lab(record)
    owner.kill()
    owner.wait()
    assert _wait_gone(pidns) == []


def test_cli_up_get_logs_exec_delete_down(run_cli, lab_name):
    up = run_cli("up", "--scenario", "article", lab=lab_name, check=True)
    assert "deployment.apps/service-test created" in up.stdout
    pods = run_cli("get", "pods", "-o", "wide", lab=lab_name, check=True).stdout
    assert pods.splitlines()[0].split()[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE",
                                                "IP", "NODE"]
    assert "10.0.1.2" in pods and "10.0.2.2" in pods
    logs = run_cli("logs", "service-test-client1", lab=lab_name, check=True).stdout
    assert "<p>Hello from service-test-6ffd9ddbbf-qs2j6</p>" in logs
    ex = run_cli("exec", "--lab", lab_name, "service-test-6ffd9ddbbf-kf4j2", "--", "sh", "-c",
                 "ip -4 -o addr show eth0; exit 4")
    assert ex.returncode == 4 and "10.0.1.2/24" in ex.stdout
    assert run_cli("exec", "--lab", lab_name, "node2", "--", "hostname").returncode == 0
    deleted = run_cli("delete", "pod", "service-test-6ffd9ddbbf-kf4j2", lab=lab_name, check=True)
    assert deleted.stdout.strip() == 'pod "service-test-6ffd9ddbbf-kf4j2" deleted'
    pods = run_cli("get", "pods", "-o", "wide", lab=lab_name, check=True).stdout
    assert "kf4j2" not in pods and "10.0.1.4" in pods
    listed = run_cli("list", check=True).stdout
    assert lab_name in listed
    down = run_cli("down", lab=lab_name, check=True)
    assert "deleted" in down.stdout
    assert run_cli("down", lab=lab_name).returncode == 0  # idempotent
    assert lab_name not in run_cli("list").stdout


def test_cli_up_twice_is_refused(run_cli, lab_name):
    run_cli("up", "--scenario", "empty", lab=lab_name, check=True)
    again = run_cli("up", lab=lab_name)
    assert again.returncode == 1
    assert again.stderr.strip().endswith(f"kubenet down --lab {lab_name})")
    assert "Traceback" not in again.stderr


@pytest.mark.parametrize("args, message", [
    (["get", "pods"], "not found"),
    (["logs", "x"], "not found"),
])
def test_cli_unknown_lab(run_cli, args, message):
    proc = run_cli(*args, lab="no-such-lab")
    assert proc.returncode == 1
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_cli_errors_are_one_line_and_change_nothing(run_cli, lab_name, tmp_path):
    run_cli("up", lab=lab_name, check=True)
    before = run_cli("get", "pods", "-o", "name", lab=lab_name).stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n"
                   "  - {name: c, image: i, command: [x], ports: [{containerPort: 0}]}\n")
    cases = [
        ["apply", "-f", str(bad)],
        ["apply", "-f", str(tmp_path / "missing.yaml")],
        ["logs", "nope"],
        ["exec", "service-test-client1", "--", "true"],
        ["delete", "pod", "nope"],
        ["get", "widgets"],
        ["scale", "deployment", "service-test", "--replicas", "-1"],
    ]
    for args in cases:
        proc = run_cli(*args, lab=lab_name)
        assert proc.returncode == 1, args
        assert len(proc.stderr.strip().splitlines()) == 1, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    proc = run_cli("apply", "-f", "-", lab=lab_name, stdin="kind: Service\napiVersion: v9\n"
                   "metadata: {name: s}\n")
    assert proc.returncode == 1 and 'no matches for kind "Service" in version "v9"' in proc.stderr
    assert run_cli("get", "pods", "-o", "name", lab=lab_name).stdout == before


def test_a_host_without_privileges_is_told_what_to_do(run_cli):
    """Imitate a locked-down host: no capabilities, user namespaces switched off."""
    script = ("echo 0 > /proc/sys/user/max_user_namespaces && exec setpriv --bounding-set=-all "
              "--inh-caps=-all --no-new-privs \"$@\"")
    base = ["unshare", "--user", "--map-root-user", "sh", "-c", script, "locked"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    doctor = subprocess.run([*base, sys.executable, "-m", "kubenet.cli", "doctor"],
                            capture_output=True, text=True, env=env)
    assert doctor.returncode == 1
    assert "tier: unavailable" in doctor.stdout
    assert "user.max_user_namespaces" in doctor.stdout
    up = subprocess.run([*base, sys.executable, "-m", "kubenet.cli", "up"],
                        capture_output=True, text=True, env=env)
    assert up.returncode == 1
    assert up.stderr.count("\n") == 1 and "max_user_namespaces" in up.stderr
    assert "Traceback" not in up.stderr
