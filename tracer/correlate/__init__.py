"""The sans-IO correlator: kernel records + hook records in, request traces out.

No BPF, no threads, no clock: live runs, replays and tests all go through `Correlator.feed`.

    correlator.py        the state machine: dispatch per record type, emit finished requests
    connection_table.py  which connection a record belongs to
    connection.py        one connection's reads, writes, requests waiting for evidence
    reorder.py           the bounded reorder window (records arrive out of time order)
    stage_builder.py     one request's evidence -> its stages, notes and details
    kernel_only.py       attach mode: requests delimited from kernel records alone (no hooks)
    request_line.py      the request line and status read from the bytes the kernel captured
    synthetic.py         synthetic record streams for tests and scripts/bench_correlator
    synthetic_attach.py  ... and what the probes see of a server without hooks
    compiled.py          use the mypyc build of the modules above when it is current
"""

from tracer.correlate.compiled import activate

COMPILED = activate(__path__)
"""Whether the mypyc-compiled correlator is in use (see compiled.py)."""
