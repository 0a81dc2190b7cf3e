"""`reqtrace doctor`: the plan logic (pure) and the real command on this kernel."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from probes.catalog import CATALOG, MECHANISMS, ProbePoint, Strategy, driver_poll_point
from tracer.kernel.attach_plan import ProbePlan, choose
from tracer.kernel.attach_trials import Attempt
from tracer.kernel.system_facts import gather

from .helpers import as_nobody

POINT = ProbePoint(
    name="tcp_receive",
    title="t",
    layer="kernel",
    feeds=("ip_tcp",),
    strategies=(
        Strategy("tracepoint", ("tcp:tcp_probe",)),
        Strategy("raw_tracepoint", ("tcp_probe",), reads_struct_layouts=True),
        Strategy("kprobe", ("tcp_rcv_established",), reads_struct_layouts=True),
    ),
)


def test_first_strategy_that_attaches_is_chosen() -> None:
    attempts = [
        Attempt("tracepoint", ("tcp:tcp_probe",), True),
        Attempt("raw_tracepoint", ("tcp_probe",), True),
        Attempt("kprobe", ("tcp_rcv_established",), True),
    ]
    entry = choose(POINT, attempts)
    assert entry.chosen == "tracepoint"


def test_struct_reading_strategy_is_never_used_even_when_it_attaches() -> None:
    attempts = [
        Attempt("tracepoint", ("tcp:tcp_probe",), False, "tracepoint does not exist"),
        Attempt("raw_tracepoint", ("tcp_probe",), True),
        Attempt("kprobe", ("tcp_rcv_established",), False, "no kprobes"),
    ]
    entry = choose(POINT, attempts)
    assert entry.chosen is None
    raw = entry.verdicts[1]
    assert raw.attempt.attached and not raw.usable
    assert "header layouts" in raw.reason
    assert "no strategy works here" in entry.summary


def test_layout_free_fallback_is_chosen_when_the_tracepoint_is_missing() -> None:
    point = ProbePoint(
        name="socket_data_ready",
        title="t",
        layer="kernel",
        feeds=(),
        strategies=(
            Strategy("tracepoint", ("sock:sk_data_ready",)),
            Strategy("raw_tracepoint", ("sk_data_ready",)),
        ),
    )
    attempts = [
        Attempt("tracepoint", ("sock:sk_data_ready",), False, "lacks field(s) skaddr"),
        Attempt("raw_tracepoint", ("sk_data_ready",), True),
    ]
    assert choose(point, attempts).chosen == "raw_tracepoint"


def test_the_plan_names_the_poll_function_attached_for_each_nic() -> None:
    virtio = driver_poll_point("eth0", "virtio_net")
    mlx = driver_poll_point("eth1", "mlx5_core")
    virtio_tries = [
        Attempt("fentry", ("virtnet_poll",), False, "no BTF for modules"),
        Attempt("kprobe", ("virtnet_poll",), True),
    ]
    mlx_tries = [
        Attempt("fentry", ("mlx5e_napi_poll",), False, "EPERM"),
        Attempt("kprobe", ("mlx5e_napi_poll",), False, "no kprobes"),
    ]
    plan = ProbePlan((choose(virtio, virtio_tries), choose(mlx, mlx_tries)))
    assert plan.chosen("nic_driver_poll:eth0") == "kprobe"
    assert plan.driver_poll_functions() == {"eth0": "virtnet_poll"}  # eth1 attached nothing


def test_a_run_plans_driver_points_only_for_real_nics(monkeypatch: pytest.MonkeyPatch) -> None:
    from tracer.kernel import interfaces

    fake = [
        interfaces.Interface("lo", "", True, True),
        interfaces.Interface("eth0", "virtio_net", True, False),
        interfaces.Interface("veth1", "veth", True, False),
        interfaces.Interface("eth9", "virtio_net", False, False),
    ]
    monkeypatch.setattr(interfaces, "list_interfaces", lambda: fake)
    real = {"eth0"}
    monkeypatch.setattr(interfaces, "_has_bus_device", lambda name: name in real)
    doctor_points, _ = interfaces.nic_driver_points()
    run_points, notes = interfaces.nic_driver_points(hardware_only=True)
    assert [p.name for p in doctor_points] == ["nic_driver_poll:eth0", "nic_driver_poll:veth1"]
    assert [p.name for p in run_points] == ["nic_driver_poll:eth0"]
    assert "napi:napi_poll" in notes["nic_driver_poll:eth0"]


def test_tracepoint_fields_are_read_from_tracefs_format() -> None:
    from tracer.kernel.attach_trials import tracepoint_fields

    fields = tracepoint_fields("tcp:tcp_probe")
    if fields is None:
        pytest.skip("tracefs not readable here")
    assert {"sport", "dport", "saddr", "skaddr", "data_len"} <= fields
    assert tracepoint_fields("tcp:no_such_tracepoint") is None


def _doctor_json() -> tuple[int, dict[str, object]]:
    result = subprocess.run(
        [sys.executable, "-m", "tracer", "doctor", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.stderr == "", result.stderr  # BCC/clang noise never reaches the user
    return result.returncode, json.loads(result.stdout)


@pytest.mark.bpf
def test_doctor_json_lists_every_point_with_each_mechanism_really_tried() -> None:
    facts = gather()
    code, report = _doctor_json()
    assert code == 0
    assert report["can_trace"] is True
    points = {p["name"]: p for p in report["probe_points"]}  # type: ignore[union-attr,index]
    for point in CATALOG:
        entry = points[point.name]
        tried = [s["mechanism"] for s in entry["strategies"]]
        assert tried == list(MECHANISMS), point.name
        by_mechanism = {s["mechanism"]: s for s in entry["strategies"]}
        # Tracepoints attach for every point on the kernels we support.
        assert by_mechanism["tracepoint"]["attached"] is True, point.name
        assert entry["chosen"] == "tracepoint", point.name
        for mechanism in ("fentry", "kprobe"):
            attempt = by_mechanism[mechanism]
            assert attempt["attached"] or attempt["reason"], (point.name, mechanism)
        if not facts.kprobes_in_kernel:
            assert by_mechanism["kprobe"]["attached"] is False
            assert "no kprobes" in by_mechanism["kprobe"]["reason"]
    assert report["headers"]["state"] in ("exact", "nearest-linked", "kheaders")  # type: ignore[index]


@pytest.mark.bpf
def test_doctor_fentry_reason_comes_from_the_kernel() -> None:
    _, report = _doctor_json()
    fentry = [
        s
        for p in report["probe_points"]  # type: ignore[union-attr]
        for s in p["strategies"]
        if s["mechanism"] == "fentry"
    ]
    assert fentry
    for attempt in fentry:
        if not attempt["attached"]:
            assert attempt["reason"], attempt
            assert "Traceback" not in attempt["reason"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged user")
def test_doctor_without_root_says_what_is_missing_and_fails() -> None:
    result = as_nobody([sys.executable, "-m", "tracer", "doctor"])
    assert result.returncode == 2  # cannot trace here, as `run` says it
    assert "Traceback" not in result.stdout + result.stderr
    assert "missing: root" in result.stdout
    assert "run the command with sudo" in result.stdout
