"""The servers people already run (uvicorn, gunicorn with uvicorn workers), with reqtrace's hooks.

Everything here runs inside the app's interpreter, in the server child of
`reqtrace run --server uvicorn|gunicorn` (and in gunicorn's workers). Like tracer/server, it
imports nothing of the tracer but the hook records' plumbing (tracer/records/hooks.py and the
tracer/server pieces that build and carry them), plus the user's own uvicorn and gunicorn.
The hooks go in through uvicorn's own extension point, `Config(http=ProtocolClass)`: the
protocol classes subclass uvicorn's and stamp the same moments the bundled server stamps, so
the correlator builds the same stages. One job per module:

    hook_state.py          where this process's records go, its pid and connection counter
    connection_timing.py   one connection's stamps, requests and the writes of each response
    uvicorn_httptools.py   uvicorn's HttpToolsProtocol with the hooks
    timed_protocol.py      the connection hooks both hooked uvicorn protocols mix in
    uvicorn_h11.py         uvicorn's H11Protocol with the hooks
    uvicorn_support.py     which uvicorn versions and --http choices get the hooks, and why not
    uvicorn_server.py      uvicorn's Server with the milestones of `run --server uvicorn`
    atomic_writer.py       the hook pipe shared by several processes (gunicorn's workers)
    gunicorn_worker.py     uvicorn's gunicorn workers with the hooks
    gunicorn_run.py        gunicorn's master in the server child; `reqtrace run --server gunicorn`

Nothing is imported here: uvicorn and gunicorn are imported only by the modules that use them.
"""
