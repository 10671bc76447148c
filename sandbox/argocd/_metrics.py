"""Simulated per-application traffic, exposed in the Prometheus text format.

Each deployed application serves ``requests_per_second`` simulated requests; the share
answered with code 500 is the error ratio of its deployed image tag (``errorRatioByTag``,
keyed by tag or by full image reference; the worst of the app's images wins; 0.0 when
unlisted), unless an admin override sets the app's ratio. Counts accrue from elapsed time,
so counters grow steadily whether or not anyone scrapes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


def image_tag(image: str) -> str:
    """The tag of an image reference (``repo:tag@digest``), or ``latest`` when none."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else "latest"


def error_ratio(images: Iterable[str], by_tag: Mapping[str, float]) -> float:
    ratios = [by_tag.get(image, by_tag.get(image_tag(image), 0.0)) for image in images]
    return max(ratios, default=0.0)


@dataclass
class Traffic:
    """Accrued simulated request counts of one application."""

    ok: float = 0.0
    errors: float = 0.0
    last: float | None = None

    def accrue(self, now: float, serving: bool, rate: float, ratio: float) -> None:
        if serving and self.last is not None and now > self.last:
            requests = rate * (now - self.last)
            self.errors += requests * ratio
            self.ok += requests * (1.0 - ratio)
        self.last = now if serving else None


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: Mapping[str, str]) -> str:
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in pairs.items()) + "}"


@dataclass
class AppSample:
    """What the exposition needs to know about one application."""

    app: str
    traffic: Traffic
    images: list[str]
    revision: str
    health: str
    sync: str
    ratio: float


def exposition(samples: Iterable[AppSample]) -> str:
    """The Prometheus text exposition (format 0.0.4) of the samples."""
    samples = list(samples)
    lines = [
        "# HELP emulator_http_requests_total Simulated HTTP requests served by the application.",
        "# TYPE emulator_http_requests_total counter",
    ]
    for s in samples:
        lines.append(
            f"emulator_http_requests_total{_labels({'app': s.app, 'code': '200'})} "
            f"{math.floor(s.traffic.ok)}"
        )
        lines.append(
            f"emulator_http_requests_total{_labels({'app': s.app, 'code': '500'})} "
            f"{math.floor(s.traffic.errors)}"
        )
    lines += [
        "# HELP emulator_error_ratio Configured share of simulated requests answered with 500.",
        "# TYPE emulator_error_ratio gauge",
    ]
    lines += [f"emulator_error_ratio{_labels({'app': s.app})} {s.ratio}" for s in samples]
    lines += [
        "# HELP emulator_app_info Deployed state of the application (one series per image).",
        "# TYPE emulator_app_info gauge",
    ]
    for s in samples:
        for image in s.images or [""]:
            labels = {
                "app": s.app,
                "image": image,
                "tag": image_tag(image) if image else "",
                "revision": s.revision,
                "health": s.health,
                "sync": s.sync,
            }
            lines.append(f"emulator_app_info{_labels(labels)} 1")
    return "\n".join(lines) + "\n"
