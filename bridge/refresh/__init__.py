"""Keeping credentials fresh: the pure refresh `policy`, one target's `pipeline` (a
fresh JWT-SVID through its chain of hops), and the `scheduler` that runs every target
on the policy's clock, bounded and single-flight."""

from __future__ import annotations

from bridge.refresh.pipeline import TargetPipeline, Timings
from bridge.refresh.policy import Policy
from bridge.refresh.scheduler import Scheduler

__all__ = ["Policy", "Scheduler", "TargetPipeline", "Timings"]
