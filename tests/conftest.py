"""Shared test fixtures. Tests run on CPU; real-image tests skip cleanly without ../shared/data."""
import os
import pathlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("JAXSR_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> pathlib.Path:
    """The real-image folder (../shared/data or $JAXSR_SHARED_DATA); skips the test when absent."""
    if not SHARED_DATA.is_dir():
      pytest.skip(f"real test data not found at {SHARED_DATA} (set JAXSR_SHARED_DATA)")
    return SHARED_DATA


def _share_one_compilation_cache() -> None:
    """One fresh XLA cache folder for this test session, shared by the xdist workers and every
    subprocess a test starts (they inherit the variable): a program that several tests compile
    (the same tiny model, a killed run and its resume) compiles once. Never the user's cache."""
    if "JAXSR_TEST_CACHE_SET" in os.environ:
        return
    import tempfile
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxsr-test-xla-")
    # Decoded image stores (jaxsr.data.store) of this session: never the user's ~/.cache.
    os.environ["JAXSR_STORE_DIR"] = tempfile.mkdtemp(prefix="jaxsr-test-stores-")
    os.environ["JAXSR_TEST_CACHE_SET"] = "1"


_share_one_compilation_cache()
