"""Load reqtrace's probes, print their program ids, and hold them until a signal arrives."""

from __future__ import annotations

import sys
import time

from tracer.kernel.attach_plan import build_plan
from tracer.kernel.attach_trials import AttachTrials
from tracer.kernel.probe_loader import ProbeSession
from tracer.kernel.system_facts import gather
from tracer.session.signals import exit_cleanly_on_signals


def main() -> None:
    with AttachTrials(gather()) as trials:
        plan = build_plan(trials)
    try:
        with exit_cleanly_on_signals(), ProbeSession(plan) as probes:
            print("ATTACHED", *probes.program_ids(), flush=True)
            while True:
                time.sleep(0.05)
    finally:
        print("DETACHED", flush=True)


if __name__ == "__main__":
    sys.exit(main())
