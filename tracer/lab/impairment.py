"""What the lab does to packets (delay, jitter, loss, rate) and the units people type.

The values are validated when the object is built, so every later layer (tc, the delay
line, the CLI) can trust them, and a mistake is reported as one sentence before anything
is created on the machine.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from tracer.lab.errors import LabError

SIDES = ("server", "client", "both")
_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
_DURATION_UNITS = {"us": 0.001, "µs": 0.001, "ms": 1.0, "s": 1000.0, "": 1.0}
_RATE_UNITS = {"kbit": 0.001, "mbit": 1.0, "gbit": 1000.0, "": 1.0}


@dataclass(frozen=True)
class Impairment:
    """Impairments of the lab link; `side` says which direction they apply to.

    "server" impairs frames leaving the server toward the client, "client" the frames
    leaving the client toward the server, "both" each direction (so a delay of 20 ms on
    "both" adds 40 ms to a round trip).
    """

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    rate_mbit: float | None = None
    side: str = "both"
    seed: int | None = None

    def __post_init__(self) -> None:
        for name, value in (
            ("delay", self.delay_ms),
            ("jitter", self.jitter_ms),
            ("loss", self.loss_pct),
        ):
            if not math.isfinite(value) or value < 0:
                raise LabError(f"{name} must be a finite number >= 0, not {value:g}")
        if self.loss_pct > 100:
            raise LabError(f"loss must be between 0% and 100%, not {self.loss_pct:g}%")
        if self.jitter_ms > self.delay_ms:
            raise LabError(
                f"jitter ({self.jitter_ms:g} ms) cannot exceed the delay ({self.delay_ms:g} ms): "
                "a frame cannot leave before it arrived"
            )
        if self.rate_mbit is not None and (
            not math.isfinite(self.rate_mbit) or self.rate_mbit <= 0
        ):
            raise LabError(f"rate must be a number > 0, not {self.rate_mbit:g}")
        if self.rate_mbit is not None and self.rate_mbit < 0.008:
            raise LabError(f"rate must be at least 8kbit, not {self.rate_mbit * 1000:g}kbit")
        if self.side not in SIDES:
            raise LabError(f"side must be one of {', '.join(SIDES)}, not {self.side!r}")

    @property
    def shapes_timing(self) -> bool:
        """True when delay, jitter or loss is asked for (netem or the delay line does it)."""
        return self.delay_ms > 0 or self.jitter_ms > 0 or self.loss_pct > 0

    def impairs(self, direction: str) -> bool:
        """Whether frames travelling in `direction` ("server" or "client") are impaired."""
        return self.side in ("both", direction)

    def describe(self, rate: bool = True) -> str:
        """A short summary, e.g. "delay 5 ms ± 1 ms, loss 1% on each direction"."""
        parts = []
        if self.delay_ms:
            jitter = f" ± {self.jitter_ms:g} ms" if self.jitter_ms else ""
            parts.append(f"delay {self.delay_ms:g} ms{jitter}")
        if self.loss_pct:
            parts.append(f"loss {self.loss_pct:g}%")
        if rate and self.rate_mbit is not None:
            parts.append(f"rate {format_rate(self.rate_mbit)}")
        if not parts:
            return "no impairment"
        where = "each direction" if self.side == "both" else f"the {self.side}'s egress"
        return f"{', '.join(parts)} on {where}"


def _split(text: str, units: dict[str, float], what: str, example: str) -> float:
    match = re.fullmatch(_NUMBER + r"\s*([a-zµ%]*)", text.strip().lower())
    if not match or match.group(2) not in units:
        raise LabError(f"cannot read {what} {text!r}; write it like {example}")
    return float(match.group(1)) * units[match.group(2)]


def parse_duration_ms(text: str) -> float:
    """'5ms', '500us', '0.1s' (a bare number means ms) -> milliseconds."""
    return _split(text, _DURATION_UNITS, "the duration", "5ms, 500us or 0.1s")


def parse_percent(text: str) -> float:
    """'1%', '0.5%' or '1' -> percent."""
    return _split(text, {"%": 1.0, "": 1.0}, "the percentage", "1% or 0.5%")


def parse_rate_mbit(text: str) -> float:
    """'10mbit', '512kbit', '1gbit' (a bare number means mbit) -> megabits per second."""
    return _split(text, _RATE_UNITS, "the rate", "10mbit, 512kbit or 1gbit")


def format_rate(mbit: float) -> str:
    """Megabits per second in the unit tc would print: 512kbit, 10mbit, 1gbit."""
    if mbit >= 1000:
        return f"{mbit / 1000:g}gbit"
    if mbit >= 1:
        return f"{mbit:g}mbit"
    return f"{mbit * 1000:g}kbit"
