"""Term-frequency adjustments on names (``[empi] name_frequency_adjustment``): an agreeing
name weighs ``m / tf`` (its share of the records) instead of the level's ``m / u``, in a
full link and in an incremental one, checked against the frequencies counted here."""

from __future__ import annotations

import collections
import json
import math
from pathlib import Path

import pyarrow as pa
import pytest

from medlake.access import Principal, Role
from medlake.access.context import acting_as
from medlake.config import open_workspace, write_settings
from medlake.empi import model, store
from medlake.empi.features import feature_table, with_derived
from medlake.empi.linkage import linker_factory, predict_all, predict_new, splink_api
from medlake.service import empi
from medlake.service.workspace import open_lake

pytestmark = pytest.mark.slow

#: The exact name levels and the column whose frequency adjusts them.
ADJUSTED = {"same hanzi": "name_hanzi", "same pinyin": "name_py",
            "same parts, other order": "name_sorted"}  # fmt: skip


@pytest.fixture(scope="module")
def scored(hospital_lake, tmp_path_factory: pytest.TempPathFactory):
    """The hospital's records, a model trained with name frequencies, and its pairs
    scored in one full run and in an incremental run (the last fifth as new)."""
    workspace = hospital_lake.copy(tmp_path_factory.mktemp("tf") / "ws")
    with open_lake(open_workspace(workspace)) as engine:
        features = feature_table(store.load_records(engine))
        with splink_api(engine) as api:
            settings = model.train(linker_factory(api, features), name_frequency=True)
            full = predict_all(api, features, settings, 0.01)
            cut = features.num_rows * 4 // 5
            incremental = predict_new(
                api, features.slice(0, cut), features.slice(cut), settings, 0.01
            )
    return features, settings, full, incremental


def frequencies(features: pa.Table, column: str) -> dict[str, float]:
    """Each value's share of the records that have one (what Splink calls tf)."""
    values = [v for v in with_derived(features).column(column).to_pylist() if v is not None]
    counts = collections.Counter(values)
    return {value: count / len(values) for value, count in counts.items()}


def level_gammas(settings: dict) -> dict[int, dict]:
    levels = [lv for lv in settings["comparisons"][0]["comparison_levels"]
              if not lv.get("is_null_level")]  # fmt: skip
    return {len(levels) - 1 - i: lv for i, lv in enumerate(levels)}


def check_name_weights(pairs: pa.Table, features: pa.Table, settings: dict) -> int:
    """Every pair agreeing on an adjusted name level weighs log2(m / tf); the pairs seen."""
    gammas = level_gammas(settings)
    tfs = {column: frequencies(features, column) for column in ADJUSTED.values()}
    seen = 0
    for pair in pairs.to_pylist():
        level = gammas.get(pair["gamma_name"])
        if level is None or level["label_for_charts"] not in ADJUSTED:
            continue
        column = ADJUSTED[level["label_for_charts"]]
        assert level["tf_adjustment_column"] == column
        tf = tfs[column][pair[f"{column}_l"]]
        weight = pair["mw_name"] + pair["mw_tf_adj_name"]
        assert weight == pytest.approx(math.log2(level["m_probability"] / tf), abs=1e-6)
        seen += 1
    return seen


def test_an_agreeing_name_weighs_by_its_frequency(scored) -> None:
    features, settings, full, _ = scored
    assert check_name_weights(full, features, settings) > 100
    # Common names count for less than rare ones at the same level.
    gammas = level_gammas(settings)
    same_pinyin = [p for p in full.to_pylist()
                   if gammas[p["gamma_name"]]["label_for_charts"] == "same pinyin"]  # fmt: skip
    weights = {p["mw_name"] + p["mw_tf_adj_name"] for p in same_pinyin}
    assert len(weights) > 1


def test_incremental_pairs_use_the_frequencies_of_all_records(scored) -> None:
    features, settings, _, incremental = scored
    assert check_name_weights(incremental, features, settings) > 10


def test_the_setting_retrains_and_the_review_shows_adjusted_evidence(
    hospital_lake, tmp_path: Path
) -> None:
    workspace = hospital_lake.copy(tmp_path / "ws")
    settings = open_workspace(workspace).settings
    settings.empi.name_frequency_adjustment = True
    settings.empi.link_threshold = 0.9999999  # a queue to look at on a small lake
    write_settings(workspace / "medlake.toml", settings)
    with acting_as(Principal("test-steward", Role.STEWARD)):
        first = empi.link_workspace(workspace)
        queued, _ = empi.review_queue(workspace)
    assert first.trained
    with open_lake(open_workspace(workspace)) as engine:
        active = store.active_model(engine)
        pairs = engine.execute(engine.table("empi_pair")).to_pylist()
    assert active is not None
    assert model.is_current(active.settings, name_frequency=True)
    assert not model.is_current(active.settings)
    assert queued > 0
    # Every field of a queued pair has its Bayes factor: 2 ** its match weight.
    for pair in pairs:
        evidence = json.loads(pair["evidence_json"])
        assert all(field["bayes_factor"] is not None for field in evidence.values())
        total = sum(math.log2(field["bayes_factor"]) for field in evidence.values())
        prior = math.log2(active.settings["probability_two_random_records_match"])
        prior -= math.log2(1 - active.settings["probability_two_random_records_match"])
        assert total + prior == pytest.approx(pair["match_weight"], abs=1e-3)
    settings.empi.name_frequency_adjustment = False
    write_settings(workspace / "medlake.toml", settings)
    with acting_as(Principal("test-steward", Role.STEWARD)):
        again = empi.link_workspace(workspace, full=True)
    assert again.trained  # the stored model is of the other definition
