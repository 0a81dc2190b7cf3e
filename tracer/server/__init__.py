"""The bundled ASGI server (`reqtrace serve`), with timing hooks for the tracer.

One job per module, uvicorn's shape:

    config.py        Config, and the command-line flags shared by `serve` and `run`
    main.py          serve(): load the app, lifespan, listen, signals, graceful shutdown
    protocol.py      one connection: asyncio.Protocol + httptools, limits, timeouts
    cycle.py         one request: the ASGI receive/send pair, response framing
    request_head.py  what makes a request head unacceptable (RejectRequest)
    chunked_framing.py  bounds on chunk-size lines and trailers; trailers never reach the app
    flow_control.py  back-pressure in both directions
    lifespan.py      the ASGI lifespan protocol
    app_loading.py   "module:attr" -> the app (--app-dir, --factory)
    http_errors.py   status lines and the responses the server sends itself
    state.py         what all connections share (Date header, counters)
    log_setup.py     reqtrace.server -> stderr, reqtrace.access -> stdout
    hooks.py         HookSink, the in-process sink, wire tuple <-> record (the records
                     themselves, the contract with the correlator: tracer/records/hooks.py)
    timing.py        building the records from plain values and stamp lists
    hook_channel.py  the pipe to the tracer: writer (server side) and reader

Imports point one way (main -> protocol -> cycle/timing/state -> hooks/config/...): no
module here imports one that imports it back, not even for type checking.

Nothing is imported here, so `import tracer.server.config` stays cheap for the CLI.
"""
