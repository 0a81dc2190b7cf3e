"""One `reqtrace run`: the checks, the server child, the probes, the pipeline thread, the stop.

run_session.py      RunSession: check, start the child, plan, load, arm filters, wait, stop
preflight.py        output paths checked before anything slow (--record, --force)
app_python.py       which Python runs the app (--python, $VIRTUAL_ENV, .venv), import paths
server_launch.py    the tracer's side of the child: start it as the app's user, its pipes
server_child.py     the child process: import the app, wait for the go, serve, stop
hosted_args.py      --server uvicorn|gunicorn: what the tracer reads from their own flags
worker_follower.py  gunicorn's workers into the probes' process filter as they come and go
privileges.py       whom the app runs as (SUDO_UID, --user) and starting/dropping to it
probe_setup.py      the probes of a run: cached plan or trials, stored program or clang
probe_cache.py      /var/cache/reqtrace: plans per boot, compiled programs per kernel build
compiled_program.py BCC's compiled probes as data: stored, reloaded without clang
bcc_path.py         the distribution's BCC, found from any virtualenv
progress.py         one line per startup and shutdown step, on stderr
pipeline.py         the thread that drains the ring buffer and hook pipe into the correlator
listener.py         the listening socket, made by the tracer, inherited by the child
signals.py          SIGTERM/SIGHUP as a normal stop, stop requests with their reason
request_log.py      --no-tui: one line per finished request
otlp_sink.py        --otlp-endpoint: finished requests as spans, on their own thread
view.py             SessionView: the read-only face of a run that the dashboard sees
"""
