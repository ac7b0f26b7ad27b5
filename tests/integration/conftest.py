import pytest


@pytest.fixture(scope="session", autouse=True)
def _stack(local_stack):
    return local_stack
