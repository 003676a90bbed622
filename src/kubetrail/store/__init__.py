"""The archive: immutable Parquet segments, a manifest, checkpoints and quarantine."""
