"""`make demo` ends by serving, except where it must not: MEDLAKE_DEMO_SERVE=0, or CI."""

from __future__ import annotations

import pytest

from medlake.cli.serve import DEMO_SERVE_ENV, demo_should_serve


@pytest.mark.parametrize(("env", "serves"), [
    ({}, True), ({DEMO_SERVE_ENV: "1"}, True), ({DEMO_SERVE_ENV: "0"}, False),
    ({"CI": "true"}, False), ({"CI": "1", DEMO_SERVE_ENV: "1"}, False),
])  # fmt: skip
def test_the_demo_serves_unless_told_not_to_or_in_ci(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], serves: bool
) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv(DEMO_SERVE_ENV, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert demo_should_serve() is serves
