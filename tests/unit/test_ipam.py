"""kubenet.ipam.HostLocal: the CNI host-local allocator's next-free-after-last behaviour."""

import ipaddress

import pytest

from kubenet.errors import BadRequest, KubenetError
from kubenet.ipam import HostLocal


def test_gateway_is_the_first_host_and_never_handed_out():
    ipam = HostLocal("10.0.1.0/24")
    assert str(ipam.gateway) == "10.0.1.1"
    assert ipam.subnet == ipaddress.ip_network("10.0.1.0/24")
    addresses = {ipam.allocate() for _ in range(253)}
    assert "10.0.1.1" not in addresses
    assert "10.0.1.0" not in addresses  # network address
    assert "10.0.1.255" not in addresses  # broadcast address


def test_first_address_is_dot_two():
    assert HostLocal("10.0.1.0/24").allocate() == "10.0.1.2"
    assert HostLocal("10.0.2.0/24").allocate() == "10.0.2.2"


def test_addresses_are_handed_out_in_order():
    ipam = HostLocal("10.0.1.0/24")
    assert [ipam.allocate() for _ in range(3)] == ["10.0.1.2", "10.0.1.3", "10.0.1.4"]
    assert ipam.in_use == ["10.0.1.2", "10.0.1.3", "10.0.1.4"]


def test_released_address_is_not_reused_immediately():
    ipam = HostLocal("10.0.1.0/24")
    first = ipam.allocate()
    ipam.release(first)
    assert ipam.in_use == []
    assert ipam.allocate() == "10.0.1.3"
    ipam.release("10.0.1.3")
    assert ipam.allocate() == "10.0.1.4"


def test_replaced_pod_in_the_middle_gets_a_new_address():
    ipam = HostLocal("10.0.1.0/24")
    a, b, c = (ipam.allocate() for _ in range(3))
    ipam.release(b)
    assert ipam.allocate() == "10.0.1.5"
    assert ipam.in_use == [a, c, "10.0.1.5"]


def test_wraps_around_to_the_start_of_the_range():
    ipam = HostLocal("10.0.1.0/29")  # hosts .1-.6: gateway .1, pool .2-.6
    assert [ipam.allocate() for _ in range(5)] == [f"10.0.1.{i}" for i in range(2, 7)]
    ipam.release("10.0.1.3")
    ipam.release("10.0.1.5")
    # After .6 (the last one given) the search wraps and finds .3 before .5.
    assert ipam.allocate() == "10.0.1.3"
    assert ipam.allocate() == "10.0.1.5"


def test_wrap_skips_addresses_still_in_use():
    ipam = HostLocal("10.0.1.0/29")
    for _ in range(5):
        ipam.allocate()
    ipam.release("10.0.1.6")
    ipam.release("10.0.1.4")
    # The last given was .6; continuing after it wraps to .2, .3 (in use), then .4.
    assert ipam.allocate() == "10.0.1.4"
    assert ipam.allocate() == "10.0.1.6"


def test_exhaustion_raises():
    ipam = HostLocal("10.0.1.0/29")
    for _ in range(5):
        ipam.allocate()
    with pytest.raises(BadRequest) as info:
        ipam.allocate()
    assert str(info.value) == "no free pod address left in 10.0.1.0/29"
    assert isinstance(info.value, KubenetError)
    # Freeing one makes room again.
    ipam.release("10.0.1.4")
    assert ipam.allocate() == "10.0.1.4"


def test_full_slash_24_holds_253_pods():
    ipam = HostLocal("10.0.1.0/24")
    addresses = [ipam.allocate() for _ in range(253)]
    assert len(set(addresses)) == 253
    assert addresses[-1] == "10.0.1.254"
    with pytest.raises(BadRequest):
        ipam.allocate()


def test_subnet_without_room_for_pods():
    ipam = HostLocal("10.0.1.0/30")  # hosts .1 (gateway) and .2
    assert ipam.allocate() == "10.0.1.2"
    with pytest.raises(BadRequest):
        ipam.allocate()


def test_reserve_takes_a_specific_address():
    ipam = HostLocal("10.0.1.0/24")
    assert ipam.reserve("10.0.1.10") == "10.0.1.10"
    assert ipam.in_use == ["10.0.1.10"]
    assert ipam.allocate() == "10.0.1.2"


def test_allocate_skips_reserved_addresses():
    ipam = HostLocal("10.0.1.0/24")
    ipam.reserve("10.0.1.2")
    ipam.reserve("10.0.1.3")
    assert ipam.allocate() == "10.0.1.4"


def test_reserve_twice_raises():
    ipam = HostLocal("10.0.1.0/24")
    ipam.reserve("10.0.1.10")
    with pytest.raises(BadRequest) as info:
        ipam.reserve("10.0.1.10")
    assert str(info.value) == "address 10.0.1.10 is already in use"
    allocated = ipam.allocate()
    with pytest.raises(BadRequest):
        ipam.reserve(allocated)


@pytest.mark.parametrize("address", ["10.0.2.5", "10.0.1.1", "10.0.1.0", "10.0.1.255",
                                     "192.168.0.1"])
def test_reserve_outside_the_pod_range_raises(address):
    ipam = HostLocal("10.0.1.0/24")
    with pytest.raises(BadRequest) as info:
        ipam.reserve(address)
    assert str(info.value) == f"address {address} is outside the pod range 10.0.1.0/24"
    assert ipam.in_use == []


def test_release_of_an_unknown_address_is_harmless():
    ipam = HostLocal("10.0.1.0/24")
    ipam.release("10.0.1.77")
    ipam.release("10.9.9.9")
    assert ipam.in_use == []
    assert ipam.allocate() == "10.0.1.2"


def test_in_use_is_sorted_numerically():
    ipam = HostLocal("10.0.1.0/24")
    for address in ("10.0.1.100", "10.0.1.9", "10.0.1.20"):
        ipam.reserve(address)
    assert ipam.in_use == ["10.0.1.9", "10.0.1.20", "10.0.1.100"]


def test_nodes_are_independent():
    node1, node2 = HostLocal("10.0.1.0/24"), HostLocal("10.0.2.0/24")
    assert node1.allocate() == "10.0.1.2"
    assert node1.allocate() == "10.0.1.3"
    assert node2.allocate() == "10.0.2.2"
