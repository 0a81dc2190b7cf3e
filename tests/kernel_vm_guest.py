"""The guest half of tests/test_kernel_vm.py: the checks that need the 6.12 kernel, one boot.

    scripts/kernel_vm --nic HOSTPORT:8000 --share DIR -- \
        .venv/bin/python -m tests.kernel_vm_guest DIR

Runs inside the VM that scripts/kernel_vm boots (Debian's 6.12: kprobes, fentry, exact
headers) with a virtio-net NIC on qemu's user network. It talks to the host test through
the shared directory DIR only:

- `reqtrace doctor --json` -> DIR/doctor.json (the strategies this kernel chose);
- the function-adapter tests (tests/test_function_adapters.py -k inside_vm: every fentry
  and kprobe variant loads and sees traffic) -> DIR/adapters.xml (JUnit);
- `reqtrace run --no-tui --host 0.0.0.0 --record DIR/nic.jsonl` serving the basic test
  app on GUEST_PORT, and the NIC's facts (ethtool -i, its interrupts) -> DIR/nic.json.
  Once it answers, DIR/ready: the host sends its requests through the forwarded port
  (host loopback -> qemu -> virtio-net -> this kernel's driver path) and writes DIR/done;
  then the run is stopped as a user stops it (SIGINT), its exit status -> DIR/run.json.

One after the other (doctor, run, adapter tests): under an emulated CPU one host thread
runs the guest (see scripts/kernel_vm), so nothing is gained side by side. Exit status 0 when
every step ran (the host test judges what they found); each step is bounded, so a stuck
step ends the run instead of the VM's overall timeout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
GUEST_PORT = 8000
APP = "tests.server_apps.basic:app"
STARTUP_TIMEOUT_S = 600  # the first BCC compile under an emulated CPU is slow
TRAFFIC_TIMEOUT_S = 300
ADAPTER_TESTS_TIMEOUT_S = 900


def say(message: str) -> None:
    print(f"kernel_vm_guest: {message}", file=sys.stderr, flush=True)


class Background:
    """A guest step running while others do; `finish` waits for it, bounded."""

    def __init__(self, name: str, command: list[str], output: Path) -> None:
        self.name = name
        self.started = time.monotonic()
        self._output = open(output, "wb")  # noqa: SIM115 - closed in finish()
        self.process = subprocess.Popen(
            command, cwd=ROOT, stdout=self._output, stderr=subprocess.PIPE
        )

    def finish(self, timeout_s: float) -> None:
        try:
            _, stderr = self.process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, stderr = self.process.communicate()
            say(f"{self.name}: killed after {timeout_s:.0f} s")
        self._output.close()
        status = self.process.returncode
        say(f"{self.name}: exit {status} after {time.monotonic() - self.started:.0f} s")
        if status != 0:
            sys.stderr.write(stderr.decode(errors="replace")[-4000:])


def nic_facts() -> dict[str, object]:
    """The virtio-net interface, its driver and the interrupts of its queues."""
    interface = next(
        net.name
        for net in Path("/sys/class/net").iterdir()
        if (net / "device" / "driver").resolve().name == "virtio_net"
    )
    ethtool = subprocess.run(
        ["ethtool", "-i", interface], capture_output=True, text=True, check=False
    ).stdout
    interrupts: dict[int, str] = {}
    for line in Path("/proc/interrupts").read_text().splitlines()[1:]:
        number, _, rest = line.partition(":")
        if number.strip().isdigit() and "virtio" in rest:
            interrupts[int(number)] = rest.split()[-1]
    clocksource = Path("/sys/devices/system/clocksource/clocksource0/current_clocksource")
    dmesg = subprocess.run(["dmesg"], capture_output=True, text=True, check=False).stdout
    return {
        "interface": interface,
        "ethtool": ethtool,
        "interrupts": interrupts,
        "clocksource": clocksource.read_text().strip(),
        "tsc": [line for line in dmesg.splitlines() if "tsc" in line.lower()][-5:],
    }


def serve_and_trace(share: Path) -> None:
    recording = share / "nic.jsonl"
    command = [
        PYTHON,
        "-m",
        "tracer",
        "run",
        "--no-tui",
        "--host",
        "0.0.0.0",
        "--port",
        str(GUEST_PORT),
        "--record",
        str(recording),
        "--force",
        APP,
    ]
    started = time.monotonic()
    ready, ready_after, status = False, 0.0, None
    with open(share / "run.log", "w") as log:
        run = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            ready = _wait_until_serving(run)
            ready_after = time.monotonic() - started
            say(f"run: serving after {ready_after:.0f} s" if ready else "run: never served")
            (share / "nic.json").write_text(json.dumps(nic_facts()))
            if ready:
                (share / "ready").write_text(str(GUEST_PORT))
                deadline = time.monotonic() + TRAFFIC_TIMEOUT_S
                while not (share / "done").exists() and time.monotonic() < deadline:
                    if run.poll() is not None:
                        break
                    time.sleep(0.2)
            if run.poll() is None:
                run.send_signal(signal.SIGINT)
            try:
                status = run.wait(timeout=120)
            except subprocess.TimeoutExpired:
                say("run: did not stop within 120 s of SIGINT")
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
    (share / "run.json").write_text(
        json.dumps({"status": status, "serving_after_s": ready_after if ready else None})
    )
    say(f"run: exit {status}")


def _wait_until_serving(run: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline and run.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{GUEST_PORT}/", timeout=5):
                return True
        except OSError:
            time.sleep(0.5)
    return False


def main() -> int:
    share = Path(sys.argv[1])
    os.environ.pop("REQTRACE_REQUIRE_BPF", None)  # the host test judges, from the results
    doctor = Background(
        "doctor", [PYTHON, "-m", "tracer", "doctor", "--json"], share / "doctor.json"
    )
    doctor.finish(STARTUP_TIMEOUT_S)
    serve_and_trace(share)
    adapters = Background(
        "adapter tests",
        [
            PYTHON,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_function_adapters.py",
            "-k",
            "inside_vm",
            f"--junitxml={share / 'adapters.xml'}",
        ],
        share / "adapters.log",
    )
    adapters.finish(ADAPTER_TESTS_TIMEOUT_S)
    return 0


if __name__ == "__main__":
    sys.exit(main())
