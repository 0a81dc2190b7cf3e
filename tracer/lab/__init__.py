"""`reqtrace lab`: test hosts in network namespaces, joined by veth pairs, with impairments.

Requests then cross a real (virtual) device instead of loopback, and a teacher can add
delay, jitter, loss or a rate limit and watch which stage of the timeline grows. netem does
those where the kernel has it; elsewhere a user-space delay line in a router namespace does.
"""

from __future__ import annotations

from tracer.lab.errors import LabError
from tracer.lab.impairment import Impairment
from tracer.lab.netem import netem_available
from tracer.lab.teardown import lab_down
from tracer.lab.topology import Lab, LabInfo

__all__ = ["Impairment", "Lab", "LabError", "LabInfo", "lab_down", "netem_available"]
