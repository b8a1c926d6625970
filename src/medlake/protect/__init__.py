"""Data protection: backup retention, the BorgBackup repository, the ransomware watch.

Each module owns one capability and does its own I/O only on the paths it is given:
:mod:`~medlake.protect.retention` (which snapshots a hospital keeps, by time),
:mod:`~medlake.protect.borg` (a thin driver of the ``borg`` command),
:mod:`~medlake.protect.watch` (what a burst of renames, rewrites or random-looking
writes looks like). Mirrored landing lives with landing, in :mod:`medlake.ingest.landing`.
The ``medlake.service`` modules ``backup``, ``mirror``, ``watch`` and ``rebuild`` compose
them with the lake and the audit trail.
"""
