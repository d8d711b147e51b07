import pytest

from tests.kit import Kit


@pytest.fixture
def kit(tmp_path):
    """A fresh copy of the kit in a temporary folder."""
    folder = tmp_path / "kit"
    folder.mkdir()
    return Kit(folder)
