"""Shared test helpers. The TweetEval data lives outside the repository, in ../shared/data/tweeteval."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
# the floor's cache of fitted reports: one per test process, never the user's
os.environ.setdefault("RNNLAB_FLOOR_CACHE", tempfile.mkdtemp(prefix="rnnlab-floor-"))
os.environ.setdefault("RNNLAB_GRAMS_CACHE", tempfile.mkdtemp(prefix="rnnlab-grams-"))  # the same for the n-grams

REPO = Path(__file__).resolve().parents[1]
TWEETEVAL = REPO.parent / "shared" / "data" / "tweeteval"


@pytest.fixture(scope="session")
def tweeteval_dir() -> Path:
    if not TWEETEVAL.is_dir():
        pytest.skip(f"TweetEval data not found at {TWEETEVAL}")
    return TWEETEVAL
