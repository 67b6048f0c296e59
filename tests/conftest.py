from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import make_tiny_model, sentiment_frame

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture
def sentiment_csv(tmp_path) -> Path:
    path = tmp_path / "sentiment.csv"
    sentiment_frame(240).to_csv(path, index=False)
    return path
