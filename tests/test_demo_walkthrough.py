"""The README's demo walk-through, as a newcomer follows it: `signoff serve` with no config, the example client's
call that needs approval held, seen pending on the approvals page, approved with the CLI, and then run."""

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx2

from tests.integrations.test_cli import ROOT, free_port, run_signoff
from tests.webpage import csrf_of

AGENT, APPROVER = "demo-agent-token-0001", "demo-approver-token-01"
CLIENT = ROOT / "examples" / "demo_client.py"


def test_the_example_client_waits_for_an_approval_given_on_the_page_and_with_the_cli_and_then_runs(
    tmp_path: Path,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}
    env = {**clean, "PYTHONPATH": str(ROOT), "SIGNOFF_DEMO_TOKEN": AGENT, "SIGNOFF_DEMO_APPROVER_TOKEN": APPROVER}
    serve = [sys.executable, "-m", "integrations.cli", "serve", "--port", str(port)]
    with subprocess.Popen(serve, cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True) as gateway:
        try:
            assert gateway.stdout is not None
            banner = [gateway.stdout.readline() for _ in range(10)]
            client_env = {**env, "SIGNOFF_URL": base}
            with (
                subprocess.Popen(
                    [sys.executable, str(CLIENT)], cwd=tmp_path, env=client_env, stdout=subprocess.PIPE, text=True
                ) as client,
                httpx2.Client(base_url=base, timeout=5) as page,
            ):
                for _ in range(300):  # the bounded poll until uvicorn listens
                    try:
                        form = page.get("/login")
                        break
                    except httpx2.TransportError:
                        time.sleep(0.05)
                signed_in = page.post("/login", data={"csrf": csrf_of(form.text), "token": APPROVER})
                for _ in range(600):  # the bounded poll until the held call is a pending request
                    listed = page.get("/api/approvals", headers={"Authorization": f"Bearer {APPROVER}"})
                    if listed.json()["approvals"]:
                        break
                    time.sleep(0.05)
                [pending] = listed.json()["approvals"]
                on_the_page = page.get("/approvals").text
                short_link = page.get(f"/approvals/{pending['id'][:8]}")
                approved = run_signoff(["approve", pending["id"][:8], "--token", APPROVER, "--url", base], tmp_path)
                ran, _ = client.communicate(timeout=60)
        finally:
            gateway.terminate()
            gateway.wait(timeout=20)

    assert f"  approvals page : {base}/approvals   (sign in with the approver token)\n" in banner
    assert f"  approver token : {APPROVER}   (set SIGNOFF_DEMO_APPROVER_TOKEN to choose it)\n" in banner
    assert (
        '  needs approval : execute_sql sql="DROP TABLE sessions_archive" waits up to 50s for you to approve it on the'
        " approvals page, then runs (a client for it: examples/demo_client.py)\n"
    ) in banner
    assert signed_in.status_code in (200, 303)
    assert pending["tool"] == "execute_sql" and pending["arguments"] == {"sql": "DROP TABLE sessions_archive"}
    assert pending["id"] in on_the_page and "execute_sql" in on_the_page
    assert short_link.status_code == 303 and short_link.headers["location"] == f"/approvals/{pending['id']}"
    assert approved.returncode == 0 and approved.stdout == f"{pending['id']} is now approved\n"
    assert client.returncode == 0
    assert ran.splitlines()[1:] == [
        "approved, and it ran:",
        "(demo) Would execute 27 characters of SQL; nothing was run:",
        "DROP TABLE sessions_archive",
    ]
