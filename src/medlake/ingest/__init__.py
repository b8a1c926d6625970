"""Ingest: land source files unchanged, parse them into OMOP CDM rows, load with provenance.

Format readers (FHIR, HL7 v2, mapped CSV, omics) turn a landed file into
:class:`~medlake.ingest.staging.ParsedChunk` s: CDM rows plus provenance columns,
patient identities, merges and quarantined records. The lake writer owns everything
after that: row ids, person ids, concept mapping, versioning and quarantine, so every
reader gets the same guarantees (idempotent re-ingest, newer versions replace older,
nothing dropped silently).
"""
