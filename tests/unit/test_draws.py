"""kubenet.draws.Draws: recorded draws first, one queue per kind, then the seeded generator."""

import copy

import pytest

from kubenet.draws import ARTICLE, SAFE_ALPHABET, Draws


def sequence(d):
    return ([d.suffix() for _ in range(3)] + [d.choice("node", ["node1", "node2"])
                                              for _ in range(5)]
            + [d.integer("cluster-ip", 4096) for _ in range(3)] + [d.suffix(8)])


def test_same_seed_same_sequence():
    assert sequence(Draws(seed=7)) == sequence(Draws(seed=7))


def test_different_seeds_differ():
    assert sequence(Draws(seed=1)) != sequence(Draws(seed=2))


def test_default_seed_is_zero():
    assert sequence(Draws()) == sequence(Draws(seed=0))


def test_suffix_shape():
    d = Draws(seed=3)
    for length in (1, 5, 10):
        s = d.suffix(length)
        assert len(s) == length
        assert set(s) <= set(SAFE_ALPHABET)
    assert len(d.suffix()) == 5


def test_recorded_suffixes_replay_first_then_seeded():
    d = Draws(seed=5, recorded={"suffix": ["kf4j2", "qs2j6"]})
    plain = Draws(seed=5)
    assert d.suffix() == "kf4j2"
    assert d.suffix() == "qs2j6"
    # Replays do not consume the generator: what follows is the seed's own sequence.
    assert [d.suffix() for _ in range(3)] == [plain.suffix() for _ in range(3)]


def test_recorded_suffix_is_returned_whatever_the_length_asked():
    d = Draws(recorded={"suffix": ["kf4j2"]})
    assert d.suffix(8) == "kf4j2"


def test_queues_are_per_kind():
    d = Draws(seed=0, recorded={"suffix": ["aaaaa"], "node": ["node2"],
                                "pod-template-hash": ["6ffd9ddbbf"]})
    assert d.choice("node", ["node1", "node2"]) == "node2"
    assert d.template_hash("computed") == "6ffd9ddbbf"
    assert d.template_hash("computed") == "computed"
    assert d.suffix() == "aaaaa"
    # An unknown kind has no recorded draws.
    assert d.recorded("nothing") is None


def test_template_hash_without_recording_is_the_computed_one():
    assert Draws(seed=9).template_hash("5d4c8b7f9") == "5d4c8b7f9"


def test_choice_replays_recorded_then_uses_the_seed():
    d = Draws(seed=4, recorded={"node": ["node1", "node1"]})
    plain = Draws(seed=4)
    options = ["node1", "node2"]
    assert d.choice("node", options) == "node1"
    assert d.choice("node", options) == "node1"
    assert [d.choice("node", options) for _ in range(10)] == [
        plain.choice("node", options) for _ in range(10)]


def test_choice_skips_recorded_values_not_among_the_options():
    d = Draws(seed=0, recorded={"node": ["node3", "node2", "node1"]})
    # node3 is not an option: it is dropped, and node2 (the next recorded) is used.
    assert d.choice("node", ["node1", "node2"]) == "node2"
    # node1 is next in the queue but not an option now: dropped too, queue now empty.
    assert d.choice("node", ["node2"]) == "node2"
    assert d.recorded("node") is None


def test_choice_falls_back_to_the_seed_when_no_recorded_value_fits():
    d = Draws(seed=11, recorded={"node": ["node9"]})
    plain = Draws(seed=11)
    assert d.choice("node", ["node1", "node2"]) == plain.choice("node", ["node1", "node2"])
    assert d.recorded("node") is None


def test_choice_picks_only_from_the_options():
    d = Draws(seed=2)
    options = ["a", "b", "c"]
    picks = {d.choice("x", options) for _ in range(200)}
    assert picks == set(options)


def test_choice_of_nothing_raises():
    with pytest.raises(ValueError, match="nothing to choose from"):
        Draws().choice("node", [])


def test_choice_of_nothing_raises_even_with_recorded_values():
    d = Draws(recorded={"node": ["node1"]})
    with pytest.raises(ValueError):
        d.choice("node", [])
    assert d.choice("node", ["node1", "node2"]) == "node1"  # not consumed


def test_integer_range_and_seed():
    d, again = Draws(seed=8), Draws(seed=8)
    values = [d.integer("cluster-ip", 10) for _ in range(100)]
    assert all(0 <= v < 10 for v in values)
    assert values == [again.integer("cluster-ip", 10) for _ in range(100)]
    assert Draws().integer("x", 1) == 0


def test_recorded_pops_in_order():
    d = Draws(recorded={"cluster-ip": ["10.3.241.152", "10.3.241.153"]})
    assert d.recorded("cluster-ip") == "10.3.241.152"
    assert d.recorded("cluster-ip") == "10.3.241.153"
    assert d.recorded("cluster-ip") is None


def test_recorded_draws_are_copied_not_consumed_from_the_caller():
    recorded = {"suffix": ["kf4j2"], "node": ["node1"]}
    before = copy.deepcopy(recorded)
    d = Draws(recorded=recorded)
    d.suffix()
    d.choice("node", ["node1"])
    assert recorded == before


def test_article_draws_replay_the_article_then_continue():
    before = copy.deepcopy(ARTICLE)
    d = Draws(seed=0, recorded=ARTICLE)
    assert d.template_hash("x") == "6ffd9ddbbf"
    assert [d.suffix(), d.suffix()] == ["kf4j2", "qs2j6"]
    assert [d.choice("node", ["node1", "node2"]) for _ in range(3)] == ["node1"] * 3
    assert d.recorded("cluster-ip") == "10.3.241.152"
    third = d.suffix()
    assert third not in ("kf4j2", "qs2j6")
    assert len(third) == 5
    assert before == ARTICLE  # the module constant is never consumed
    # A second lab built from the article replays the same draws.
    assert Draws(seed=0, recorded=ARTICLE).suffix() == "kf4j2"
