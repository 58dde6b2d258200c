"""A seeded fuzzer for signoff's HTTP surface, shared by tests/test_fuzz.py and bench/bench_fuzz.py.

Each case is built from `(seed, index)` alone (`case(family, seed, index, target)`), so one failing case
regenerates without the ones before it. A `Stage` is a real signoff served by uvicorn over loopback in front
of the everything server (Streamable HTTP), optionally the demo server (stdio), and the loopback Slack fake.
The fuzzer only sends requests and records what came back and what was logged; it knows no expected answers
beyond "no 5xx, no traceback, and the gateway still works afterwards".

Its modules, in the order they import one another: `case` (what a case is), `values` (hostile values),
`mcp` and `routes` (the families of cases, by route), `families` (them by name, and `case()`), `running`
(sending cases, watching the log) and `stage` (the signoff they are sent to, and liveness after).
"""

from tests.fuzzing.case import Case, Target
from tests.fuzzing.families import FAMILIES, case, cases
from tests.fuzzing.running import Failure, LogWatch, Report, describe, run_cases, watching_logs
from tests.fuzzing.stage import Liveness, Stage, check_liveness, stage

__all__ = [
    "FAMILIES",
    "Case",
    "Failure",
    "Liveness",
    "LogWatch",
    "Report",
    "Stage",
    "Target",
    "case",
    "cases",
    "check_liveness",
    "describe",
    "run_cases",
    "stage",
    "watching_logs",
]
