"""The audit event: decoding every input shape and normalising it to one row."""
