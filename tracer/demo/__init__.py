"""Workloads of `reqtrace demo` and the benchmarks: an example app and a bounded load generator.

app.py   endpoints that spend their time in different layers
load.py  a small HTTP load generator, bounded in count and time, loopback only
"""
