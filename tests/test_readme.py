"""README examples run as written: a broken example is a broken promise to users."""

import re
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _example(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- {marker} -->\s*```python\n(.*?)```", text, re.S)
    assert match, f"README has no example marked {marker}"
    return match.group(1)


def test_service_example_scores_concurrent_requests_like_one_call(monkeypatch):
    monkeypatch.chdir(ROOT)  # the example names models/digits relative to the repository
    scope: dict = {}
    exec(compile(_example("service-example"), "README.md", "exec"), scope)
    # Beyond the example's own asserts: each threaded response equals scoring that request alone.
    direct = scope["Assigner"].load("models/digits", device="cpu")
    for rows, response in zip(scope["requests"], scope["responses"]):
        np.testing.assert_array_equal(response["labels"], direct.assign(np.asarray(rows)).labels)
