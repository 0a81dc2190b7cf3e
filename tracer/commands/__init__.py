"""One module per `reqtrace` command: arguments in, exit status out (tracer/cli.py routes).

run.py      reqtrace run, reqtrace demo
doctor.py   reqtrace doctor
report.py   reqtrace report
export.py   reqtrace export
"""
