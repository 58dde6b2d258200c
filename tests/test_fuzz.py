"""Fuzzing the whole HTTP surface of a real signoff: /mcp, /api, /slack/events and the web forms.

Every test serves signoff with uvicorn over loopback (the `signoff` fixture) before the everything server,
the loopback Slack fake and a few held approval requests, sends seeded cases from tests/fuzzing.py one at a
time, and asserts what an operator would check: no answer is a 5xx, nothing logged a traceback or an error,
and afterwards a normal call still works, /healthz says "ok", and the audit chain verifies and holds that call.

SIGNOFF_FUZZ_SEED (default 20260728) and SIGNOFF_FUZZ_COUNT (cases per test, default 300) choose the run;
a failure prints each distinct problem once with a request that replays it (and its family, seed and index,
from which `tests.fuzzing.case` regenerates it). The families are separate tests so each can pass on its own.
"""

import os
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import pytest

from tests.conftest import Running
from tests.fuzzing import cases, check_liveness, describe, run_cases, stage, watching_logs

pytestmark = pytest.mark.anyio

SEED = int(os.environ.get("SIGNOFF_FUZZ_SEED", "20260728"))
COUNT = int(os.environ.get("SIGNOFF_FUZZ_COUNT", "300"))
BUDGET = pytest.mark.timeout(max(60, COUNT // 10 + 30))  # pytest's 60 s is for a default count

Start = Callable[..., AbstractAsyncContextManager[Running]]


async def fuzz(signoff: Start, families: list[str], *, count: int = COUNT, stdio: bool = False) -> None:
    async with stage(signoff, stdio=stdio) as on:
        async with watching_logs() as watch:
            report = await run_cases(on.running.url, cases(families, SEED, count, on.target), watch)
            alive = await check_liveness(on.running, f"fuzz-liveness-{SEED}")
            late = [describe(record)[0] for record in watch.take()]  # logged during the liveness check
    if report.failures or late or not alive.ok:
        after = "; ".join(p for p in [alive.detail, *late] if p) or "all alive"
        pytest.fail(f"{report.summary(on.running.url)}\n\nafter the run: {after}", pytrace=False)


@BUDGET
async def test_json_rpc_envelopes_ids_batches_and_methods_never_get_a_5xx(signoff: Start) -> None:
    await fuzz(signoff, ["envelope"])


@BUDGET
async def test_tool_names_and_arguments_with_surrogates_nul_rtl_and_astral_text_never_get_a_5xx(
    signoff: Start,
) -> None:
    await fuzz(signoff, ["unicode"])


@BUDGET
async def test_meta_of_every_type_on_the_http_upstream_never_gets_a_5xx(signoff: Start) -> None:
    await fuzz(signoff, ["meta"])


@BUDGET
async def test_meta_of_every_type_on_a_stdio_upstream_never_gets_a_5xx(signoff: Start) -> None:
    await fuzz(signoff, ["stdio_meta"], count=max(1, COUNT // 2), stdio=True)


@BUDGET
async def test_cancelled_notifications_with_every_kind_of_request_id_never_get_a_5xx(signoff: Start) -> None:
    await fuzz(signoff, ["cancelled"], stdio=True)


@BUDGET
async def test_disagreeing_headers_http_methods_and_raw_bytes_never_get_a_5xx(signoff: Start) -> None:
    await fuzz(signoff, ["transport"])


@BUDGET
async def test_deeply_nested_json_on_mcp_and_api_never_gets_a_5xx(signoff: Start) -> None:
    await fuzz(signoff, ["deep"], count=max(1, COUNT // 3))


@BUDGET
async def test_api_requests_with_bad_ids_bodies_and_tokens_never_get_a_5xx(signoff: Start) -> None:
    await fuzz(signoff, ["api"])


@BUDGET
async def test_mutated_slack_payloads_signed_or_not_never_get_a_5xx_or_a_traceback(signoff: Start) -> None:
    await fuzz(signoff, ["slack"])


@BUDGET
async def test_web_forms_with_and_without_a_session_or_csrf_never_get_a_5xx(signoff: Start) -> None:
    await fuzz(signoff, ["web"])


@BUDGET
async def test_bodies_over_the_limit_on_mcp_and_slack_get_413_declared_or_chunked(signoff: Start) -> None:
    await fuzz(signoff, ["oversized_limited"], count=max(1, COUNT // 30))


@BUDGET
async def test_bodies_over_the_limit_on_api_and_web_forms_get_413_declared_or_chunked(signoff: Start) -> None:
    await fuzz(signoff, ["oversized_other"], count=max(1, COUNT // 30))
