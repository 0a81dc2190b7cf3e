"""The trace model: what a request's timeline is (stages, trace, units). Imports nothing above.

stages.py   THE stage registry: names, layers, from → to, evidence, Perfetto tracks
trace.py    RequestTrace, Stage, ConnectionFacts and their JSON form
units.py    durations and sizes for people
"""
