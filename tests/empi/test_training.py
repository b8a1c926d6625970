"""Training leaves no comparison level without a u-probability: a level that no random
pair reached gets the rule-of-three bound (3 / pairs sampled), and pairs at that level
are scored with it (log2(m / u)), not with Splink's fallback."""

from __future__ import annotations

import math

import pytest

from medlake.config import open_workspace
from medlake.empi import model, store
from medlake.empi.features import feature_table
from medlake.empi.linkage import linker_factory, predict_all, splink_api
from medlake.service.workspace import open_lake

pytestmark = pytest.mark.slow

PAIRS = 2_000  # few random pairs: rare agreements (a name in another order) go unseen


def test_unobserved_levels_get_the_rule_of_three_bound(hospital_lake, tmp_path) -> None:
    workspace = hospital_lake.copy(tmp_path / "ws")
    with open_lake(open_workspace(workspace)) as engine:
        features = feature_table(store.load_records(engine))
        with splink_api(engine) as api:
            settings = model.train(linker_factory(api, features), max_pairs=PAIRS)
            pairs = predict_all(api, features, settings, 0.01).to_pylist()
    bounded = {}
    for comparison in settings["comparisons"]:
        levels = [lv for lv in comparison["comparison_levels"] if not lv.get("is_null_level")]
        for gamma, level in zip(range(len(levels) - 1, -1, -1), levels, strict=True):
            if level["sql_condition"] == "ELSE":
                continue  # unseen only when the field is always missing (email here)
            assert isinstance(level.get("u_probability"), float), level["label_for_charts"]
            if level["u_probability"] == pytest.approx(3 / PAIRS) and "m_probability" in level:
                bounded[(comparison["output_column_name"], gamma)] = level
    assert bounded  # a few thousand pairs miss some rare agreement
    scored = 0
    for pair in pairs:
        for (name, gamma), level in bounded.items():
            if pair[f"gamma_{name}"] == gamma:
                expected = math.log2(level["m_probability"] / level["u_probability"])
                assert pair[f"mw_{name}"] == pytest.approx(expected, abs=1e-6)
                scored += 1
    assert scored > 0
