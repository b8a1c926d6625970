"""De-identification: small-cell suppression, keyed pseudonyms, date shifts,
generalization and k-anonymity.

A domain of its own so the cohort counts, the extraction, the API and governance all
protect data the same way. It reads nothing from the lake itself: callers pass counts,
Arrow tables and the workspace secret.
"""

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
    "DEFAULT_THRESHOLD",
    "AttritionStep",
    "HiddenBecause",
    "SuppressedAttrition",
    "SuppressedAttritionRow",
    "SuppressedCount",
    "is_small",
    "suppress_attrition",
    "suppress_count",
]
