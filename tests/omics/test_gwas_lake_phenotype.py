"""A quantitative lake phenotype takes each person's latest *plausible* value: an
impossible latest value (planted defects: negative LDL, 100x unit slips) is left out, as
the data-quality checks' range says, and the person keeps their latest plausible one."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from medlake.errors import InputError
from medlake.quality.catalogue import plausible_values
from medlake.service.gwas_lake import _plausible_only


def rows(values: list[float]) -> pd.DataFrame:
    days = [dt.date(2020, 1, 1) + dt.timedelta(days=i) for i in range(len(values))]
    return pd.DataFrame({"person_id": [1] * len(values), "measurement_date": days,
                         "measurement_datetime": pd.NaT, "value_as_number": values})  # fmt: skip


def test_values_outside_the_quality_checks_range_are_left_out() -> None:
    ldl = next(r for r in plausible_values() if r["concept_code"] == "22748-8")
    low, high = float(ldl["low"]), float(ldl["high"])
    kept = _plausible_only(rows([2.9, 3.1, -3.2, high * 20, low]), "22748-8")
    assert kept["value_as_number"].tolist() == [2.9, 3.1, low]


def test_codes_without_a_range_keep_every_value_and_all_implausible_is_an_error() -> None:
    assert len(_plausible_only(rows([1e6, -5.0]), "no-such-code")) == 2
    with pytest.raises(InputError, match="no plausible value of measurement '22748-8'"):
        _plausible_only(rows([-1.0, 500.0]), "22748-8")
