"""Monitoring: the request log, Evidently drift reports, control charts and alerts."""
