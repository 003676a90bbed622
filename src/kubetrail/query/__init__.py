"""Answers over the archive: filters, event queries, who, history, timeline, top, stats."""
