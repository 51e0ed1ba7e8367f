"""Trajectories: every call and run, recorded, listable, watchable and replayable."""

from gateway.trajectories.models import TERMINAL_STATUSES, Trajectory, TrajectoryStep
from gateway.trajectories.recorder import TrajectoryRecorder
from gateway.trajectories.records import CompletionRecord, RunRecord, Step
from gateway.trajectories.routes import TrajectoriesController
from gateway.trajectories.service import (
    get_trajectory,
    list_steps,
    step_to_api,
    stream_events,
    trajectory_to_api,
)

__all__ = [
    "TERMINAL_STATUSES",
    "CompletionRecord",
    "RunRecord",
    "Step",
    "TrajectoriesController",
    "Trajectory",
    "TrajectoryRecorder",
    "TrajectoryStep",
    "get_trajectory",
    "list_steps",
    "step_to_api",
    "stream_events",
    "trajectory_to_api",
]
