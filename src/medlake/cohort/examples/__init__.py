"""Example cohort definitions shipped with medlake (JSON, read with ``medlake cohort count``)."""
