"""Example feature specs for ``medlake extract --features`` (JSON; format in docs/privacy.md)."""
