"""kubenet.naming: FNV-32a, Kubernetes' SafeEncodeString and pod-template hashes."""

import copy

import pytest

from kubenet.draws import SAFE_ALPHABET
from kubenet.naming import fnv32a, safe_encode, template_hash


@pytest.mark.parametrize("data, expected", [
    (b"", 0x811C9DC5),  # the offset basis
    (b"a", 0xE40C292C),
    (b"b", 0xE70C2DE5),
    (b"foo", 0xA9F37ED7),
    (b"foobar", 0xBF9CF968),
])
def test_fnv32a_known_vectors(data, expected):
    assert fnv32a(data) == expected


def test_fnv32a_is_32_bit():
    for data in (b"\xff" * 1000, bytes(range(256)), b"kubenet" * 50):
        assert 0 <= fnv32a(data) <= 0xFFFFFFFF


def test_fnv32a_is_order_sensitive():
    assert fnv32a(b"ab") != fnv32a(b"ba")


def test_safe_encode_gives_the_article_pod_template_hash():
    assert safe_encode("2998588669") == "6ffd9ddbbf"


def test_safe_encode_maps_each_character_by_code_modulo_27():
    assert len(SAFE_ALPHABET) == 27
    assert safe_encode("") == ""
    # '0' is 48 = 27 + 21, and so on: the digits map to a fixed ten-letter subset.
    assert safe_encode("0123456789") == "4567" + "89bcdf"
    assert safe_encode(chr(27)) == SAFE_ALPHABET[0]
    assert safe_encode("a") == SAFE_ALPHABET[ord("a") % 27]


def test_safe_alphabet_has_no_vowels_or_confusable_digits():
    assert not set(SAFE_ALPHABET) & set("aeiou013")
    assert len(set(SAFE_ALPHABET)) == len(SAFE_ALPHABET)


def template():
    return {
        "metadata": {"labels": {"app": "service_test_pod"}},
        "spec": {"containers": [{"name": "simple-http", "image": "python:2.7",
                                 "command": ["/bin/sh"], "args": ["-c", "python3 -m http.server"],
                                 "ports": [{"name": "http", "containerPort": 8080}]}]},
    }


def test_template_hash_is_fnv_of_canonical_json_safe_encoded():
    t = {"b": 1, "a": [1, 2]}
    assert template_hash(t) == safe_encode(str(fnv32a(b'{"a":[1,2],"b":1}')))


def test_template_hash_is_stable():
    t = template()
    first = template_hash(t)
    assert template_hash(copy.deepcopy(t)) == first
    assert template_hash(t) == first
    assert t == template()  # hashing does not change the template


def test_template_hash_ignores_key_order():
    t = template()
    reordered = {"spec": t["spec"], "metadata": t["metadata"]}
    assert template_hash(reordered) == template_hash(t)


def test_template_hash_changes_with_the_template():
    t = template()
    changed = copy.deepcopy(t)
    changed["spec"]["containers"][0]["image"] = "python:3"
    assert template_hash(changed) != template_hash(t)


@pytest.mark.parametrize("t", [template(), {}, {"x": "y" * 1000}, {"n": list(range(100))}])
def test_template_hash_uses_only_the_safe_alphabet(t):
    h = template_hash(t)
    assert 1 <= len(h) <= 10  # the decimal digits of a 32-bit number
    assert set(h) <= set(SAFE_ALPHABET)
    assert h == h.lower()
