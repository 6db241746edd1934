"""Test-only crash points. Tests of fault tolerance need a real SIGKILL at moments too short
to hit from outside (a trial created but not yet beating, an MLflow run half logged). With
``INFLAMRX_TEST_KILL_AT=<point>:<n>`` in its environment, a process kills itself with SIGKILL
when it reaches the named point with index n. Never set it outside tests; when it is unset a
point costs one environment lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "INFLAMRX_TEST_KILL_AT"
# trial-created: a trial row committed, before its first heartbeat (index: trial number).
# child-run-created: a trial's MLflow child run created, before its data and end status are
# logged (index: the how-manieth child run this job creates, from 0).
POINTS = ("trial-created", "child-run-created")


def crash_point(point: str, index: int) -> None:
    """SIGKILL this process if the test-only variable names this point and index."""
    if os.environ.get(ENV) == f"{point}:{index}":
        os.kill(os.getpid(), signal.SIGKILL)
