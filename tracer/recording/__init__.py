"""Recordings and what is made of them: written, read, replayed, reported, exported.

writer.py    JSON Lines recording, crash-safe, mode 0600, credentials redacted
reader.py    load a recording, keeping every good line and naming the bad ones
raw_log.py   raw-record files: every correlator input, to replay a run offline
report.py    per-stage percentiles of a recording
export.py    the whole recording as one JSON document
perfetto.py  Chrome/Perfetto trace-event JSON
"""
