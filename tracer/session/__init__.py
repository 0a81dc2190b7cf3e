"""One `reqtrace run`: the server child, the pipeline thread, the sinks, the stop.

run_session.py   RunSession: check, bind, plan, load, start child, arm filters, wait, stop
server_child.py  the child process: wait for the go, drop privileges, serve the app
pipeline.py      the thread that drains the ring buffer and hook pipe into the correlator
listener.py      the listening socket, made by the tracer, inherited by the child
privileges.py    whom the app runs as (SUDO_UID, --user) and dropping to that account
signals.py       SIGTERM/SIGHUP as a normal stop, so cleanups run
request_log.py   --no-tui: one line per finished request
view.py          SessionView: the read-only face of a run that the dashboard sees
"""
