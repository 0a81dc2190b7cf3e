"""The records that feed the correlator: their layouts and decoders. Imports only the model.

kernel.py   the Python mirror of probes/events.h, decoded kernel records, JSON form
hooks.py    what the bundled server's timing hooks report (the server imports only this)
"""
