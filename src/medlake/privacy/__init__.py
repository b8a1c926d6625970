"""De-identification: small-cell suppression, keyed pseudonyms, date shifts,
generalization and k-anonymity.

A domain of its own so the cohort counts, the extraction, the API and governance all
protect data the same way. It reads nothing from the lake itself: callers pass counts,
Arrow tables and the workspace secret.
"""

from medlake.privacy.generalize import (
    DEFAULT_AGE_BAND,
    DEFAULT_TOP_AGE,
    age_band,
    age_in_years,
    birth_year_band,
    truncate_code,
)
from medlake.privacy.kanonymity import (
    DEFAULT_K,
    KAnonymityResult,
    class_sizes,
    enforce_k_anonymity,
    k_anonymity,
)
from medlake.privacy.pseudonyms import (
    date_shift_days,
    date_shifts,
    new_key,
    pseudonym,
    pseudonymize,
    read_or_create_key,
    shift_date_column,
)
from medlake.privacy.suppression import (
    DEFAULT_THRESHOLD,
    AttritionStep,
    HiddenBecause,
    SuppressedAttrition,
    SuppressedAttritionRow,
    SuppressedCount,
    is_small,
    suppress_attrition,
    suppress_count,
)

__all__ = [
    "DEFAULT_AGE_BAND",
    "DEFAULT_K",
    "DEFAULT_THRESHOLD",
    "DEFAULT_TOP_AGE",
    "AttritionStep",
    "HiddenBecause",
    "KAnonymityResult",
    "SuppressedAttrition",
    "SuppressedAttritionRow",
    "SuppressedCount",
    "age_band",
    "age_in_years",
    "birth_year_band",
    "class_sizes",
    "date_shift_days",
    "date_shifts",
    "enforce_k_anonymity",
    "is_small",
    "k_anonymity",
    "new_key",
    "pseudonym",
    "pseudonymize",
    "read_or_create_key",
    "shift_date_column",
    "suppress_attrition",
    "suppress_count",
    "truncate_code",
]
