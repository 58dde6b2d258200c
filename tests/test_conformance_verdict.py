"""The conformance runner's verdict: a difference from direct fails unless allowed, and an allowed one that is gone
fails too, so the allowlist only shrinks. Pure functions; the suite itself runs in .ci/run, not here."""

from pathlib import Path

import pytest

from tests.conformance import Allowed, Outcome, Run, RunResult, differences, load_allowed, read_outcomes, verdict

RUN = Run("0.2.0-alpha.12", "2026-07-28")
PASS = Outcome()
FAIL = Outcome(failures=("check-id: what went wrong",))


def result(**scenarios: tuple[Outcome, Outcome, Outcome]) -> RunResult:
    run = RunResult(RUN)
    for name, (direct, http, stdio) in scenarios.items():
        run.outcomes[name] = {"direct": direct, "http": http, "stdio": stdio}
    return run


def allowed(scenario: str, upstream: str) -> Allowed:
    return Allowed(RUN.label, scenario, upstream, "a reason")


def test_same_results_through_signoff_as_direct_pass_even_when_direct_fails() -> None:
    run = result(ping=(PASS, PASS, PASS), caching=(FAIL, FAIL, FAIL))
    assert differences(run) == []
    assert verdict([run], []) == []


def test_a_difference_not_in_the_allowlist_fails() -> None:
    errors = verdict([result(ping=(PASS, PASS, FAIL))], [])
    assert errors == ["NEW difference: 0.2.0-alpha.12 @ 2026-07-28: ping via stdio is FAIL (1), direct pass"]


def test_an_allowed_difference_passes() -> None:
    assert verdict([result(ping=(PASS, PASS, FAIL))], [allowed("ping", "stdio")]) == []


def test_an_allowed_difference_that_is_gone_fails_so_the_entry_is_removed() -> None:
    errors = verdict([result(ping=(PASS, PASS, PASS))], [allowed("ping", "stdio")])
    assert len(errors) == 1
    assert errors[0].startswith("FIXED, remove it from the allowlist: 0.2.0-alpha.12 @ 2026-07-28: ping via stdio")


def test_an_allowed_difference_on_the_other_upstream_kind_does_not_cover_it() -> None:
    errors = verdict([result(ping=(PASS, FAIL, PASS))], [allowed("ping", "stdio")])
    assert [e.split(":")[0] for e in errors] == ["NEW difference", "FIXED, remove it from the allowlist"]


def test_entries_for_a_run_that_did_not_run_are_ignored() -> None:
    other = Allowed("0.1.16", "ping", "stdio", "a reason")
    assert verdict([result(ping=(PASS, PASS, PASS))], [other]) == []


def test_a_scenario_with_no_result_through_signoff_is_a_difference() -> None:
    run = RunResult(RUN)
    run.outcomes["ping"] = {"direct": PASS, "http": PASS}
    assert differences(run) == [("ping", "stdio")]


def test_outcomes_are_read_from_the_suites_checks_files(tmp_path: Path) -> None:
    passed = tmp_path / "server-tools-call-simple-text-2026-12-02T05-24-24-792Z"
    failed = tmp_path / "server-server-stateless-2026-12-02T05-24-25-001Z"
    for folder in (passed, failed):
        folder.mkdir()
    passed.joinpath("checks.json").write_text('[{"id": "a", "status": "SUCCESS"}, {"id": "b", "status": "WARNING"}]')
    failed.joinpath("checks.json").write_text('[{"id": "c", "status": "FAILURE", "errorMessage": "got 200"}]')
    log = b"=== Running scenario: tools-call-simple-text ===\n=== Running scenario: caching ===\n"
    outcomes = read_outcomes(tmp_path, log)
    assert outcomes == {
        "tools-call-simple-text": PASS,
        "server-stateless": Outcome(failures=("c: got 200",)),
        "caching": Outcome(missing=True),
    }


def test_an_allowlist_entry_without_a_reason_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "allowed.toml"
    path.write_text('[[allowed]]\nrun = "0.1.16"\nscenario = "ping"\nupstream = "stdio"\n')
    with pytest.raises(SystemExit):
        load_allowed(path)


def test_the_committed_allowlist_loads_and_gives_a_reason_for_every_entry() -> None:
    entries = load_allowed(Path(__file__).parent / "conformance-allowed.toml")  # it only shrinks: it may be empty
    assert all(entry.reason.strip() for entry in entries)
    assert len({(e.run, e.scenario, e.upstream) for e in entries}) == len(entries)
