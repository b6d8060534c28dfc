import pytest

import kubenet


@pytest.fixture(scope="module")
def article_lab():
    with kubenet.Lab("article") as lab:
        yield lab


@pytest.fixture
def empty_lab():
    with kubenet.Lab("empty") as lab:
        yield lab
