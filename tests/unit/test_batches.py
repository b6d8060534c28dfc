"""Cutting a ruleset into several transactions with the same effect (kubenet.batches)."""

import shutil
import subprocess

import pytest

from kubenet import batches, scale
from kubenet.kubeproxy import iptables, nftables


def objects(n: int = 30):
    return scale.synthetic(n, ["10.0.2.2", "10.0.2.3"])


def rendered_restore(**kw) -> str:
    return iptables.render(*objects(), node_name="node1", node_ips=["10.240.0.2"],
                           cluster_cidr="10.0.0.0/14", nfacct=False, **kw)


def test_restore_parts_declare_first_append_in_order_delete_last():
    text = rendered_restore(existing_nat_chains=["KUBE-SVC-STALE0000000000"])
    parts = batches.split_restore(text, 25)
    assert len(parts) > 4
    # every rule once, in the original order, per table
    def rules(t: str) -> list[str]:
        return [x for x in t.splitlines() if x.startswith("-A ")]
    assert [r for p in parts for r in rules(p)] == rules(text)
    for p in parts:
        lines = p.splitlines()
        assert lines[0] in ("*filter", "*nat") and lines[-1] == "COMMIT"
        assert len(lines) <= 25 + 2
    nat = "".join(p for p in parts if p.startswith("*nat")).splitlines()
    kinds = [x[:2] for x in nat if x[:2] in (":K", "-A", "-X")]
    # every declaration before any rule, every deletion after the last rule
    assert kinds == sorted(kinds, key=lambda k: {":K": 0, "-A": 1, "-X": 2}[k])
    assert "-X KUBE-SVC-STALE0000000000" in nat


def test_small_rulesets_stay_one_part_per_table():
    parts = batches.split_restore(rendered_restore())
    assert [p.splitlines()[0] for p in parts] == ["*filter", "*nat"]
    with pytest.raises(ValueError):
        batches.split_restore("*nat\nCOMMIT\n", 0)


def test_nft_parts_keep_every_command_in_order():
    text = nftables.render(*objects(), node_name="node1", node_ips=["10.240.0.2"],
                           cluster_cidr="10.0.0.0/14")
    parts = batches.split_nft(text, 40)
    assert "".join(parts).splitlines() == [x for x in text.splitlines() if x.strip()]
    assert all(len(p.splitlines()) <= 40 for p in parts)


@pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("iptables-restore") is None
                    or shutil.which("nft") is None, reason="needs unshare, iptables, nft")
def test_parts_build_the_same_ruleset_as_one_transaction(tmp_path):
    """In a throwaway network namespace: applied in parts or whole, the same rules."""
    restore, nft = rendered_restore(), nftables.render(
        *objects(), node_name="node1", node_ips=["10.240.0.2"], cluster_cidr="10.0.0.0/14")
    script = tmp_path / "apply.sh"
    for name, parts in (("whole", [restore]), ("parts", batches.split_restore(restore, 20))):
        for i, part in enumerate(parts):
            (tmp_path / f"{name}-ipt-{i}").write_text(part)
    for name, parts in (("whole", [nft]), ("parts", batches.split_nft(nft, 20))):
        for i, part in enumerate(parts):
            (tmp_path / f"{name}-nft-{i}").write_text(part)
    script.write_text(
        "set -e\nfor kind in whole parts; do\n"
        "  for f in $(ls -v $D/$kind-ipt-*); do iptables-restore --noflush $f; done\n"
        "  for f in $(ls -v $D/$kind-nft-*); do nft -f $f; done\n"
        "  iptables-save | grep -v '^#' > $D/$kind.saved; nft list table ip kube-proxy >> "
        "$D/$kind.saved\n"
        "  iptables -t nat -F; iptables -t nat -X; iptables -F; iptables -X;"
        " nft delete table ip kube-proxy\n"
        "done\n")
    done = subprocess.run(["unshare", "-rn", "sh", str(script)], env={"D": str(tmp_path),
                          "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                          capture_output=True, text=True)
    if done.returncode != 0 and "Operation not permitted" in done.stderr:
        pytest.skip("no user namespaces here")
    assert done.returncode == 0, done.stderr
    whole = (tmp_path / "whole.saved").read_text()
    assert "-A KUBE-SERVICES" in whole and "map service-ips" in whole
    assert whole == (tmp_path / "parts.saved").read_text()
