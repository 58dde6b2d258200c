import pytest

from policies.risk import Category, Hints, Risk, ToolInfo, classify

# The five catalogue seeds, with the descriptions their servers publish.
SEEDS = {
    "destroy_connection": "Destroy a connection — stops the source subscriber, cleans up the stream buffer.",
    "session_destroy": "Close and clean up a browser session. Frees a pool slot.",
    "PostgreSQL_kill_connection": "Terminate a specific database connection by PID.",
    "ip_control_drop_connections": "Drop active connections for specified IPs",
    "terminate_user_connections": (
        "Disconnect all connections for a specific user. Useful for moderation or security — forces a user offline "
        "across all channels."
    ),
}
SEED_VERDICTS = {
    "destroy_connection": (Category.DESTRUCTIVE, Risk.CRITICAL),
    "session_destroy": (Category.DESTRUCTIVE, Risk.CRITICAL),
    "PostgreSQL_kill_connection": (Category.EXECUTE, Risk.HIGH),
    "ip_control_drop_connections": (Category.EXECUTE, Risk.HIGH),
    "terminate_user_connections": (Category.WRITE, Risk.MEDIUM),
}

# The annotations the demo server gives each kind of tool (integrations/demo.py).
READ_ONLY = Hints(read_only=True, destructive=False, idempotent=True, open_world=False)
WRITE = Hints(read_only=False, destructive=False, idempotent=True, open_world=False)
EXECUTE = Hints(read_only=False, destructive=False, idempotent=False, open_world=False)
DESTRUCTIVE = Hints(read_only=False, destructive=True, idempotent=False, open_world=False)
DEMO_HINTS = {
    "destroy_connection": DESTRUCTIVE,
    "session_destroy": DESTRUCTIVE,
    "PostgreSQL_kill_connection": EXECUTE,
    "ip_control_drop_connections": EXECUTE,
    "terminate_user_connections": WRITE,
}


def verdict(name: str, description: str = "", hints: Hints | None = None) -> tuple[Category, Risk]:
    c = classify(ToolInfo(name, description, hints or Hints()))
    return c.category, c.risk


# -- the seeds ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SEEDS)
def test_each_seed_lands_where_its_catalogue_page_puts_it_from_its_words_alone(name: str) -> None:
    assert verdict(name, SEEDS[name]) == SEED_VERDICTS[name]


@pytest.mark.parametrize("name", SEEDS)
def test_each_seed_lands_in_the_same_place_with_the_demo_servers_annotations(name: str) -> None:
    assert verdict(name, SEEDS[name], DEMO_HINTS[name]) == SEED_VERDICTS[name]


@pytest.mark.parametrize("name", SEEDS)
def test_a_seed_that_claims_read_only_is_not_trusted_and_the_reason_says_so(name: str) -> None:
    hostile = Hints(read_only=True, destructive=False, idempotent=True, open_world=False)
    c = classify(ToolInfo(name, SEEDS[name], hostile))
    assert (c.category, c.risk) == SEED_VERDICTS[name]
    assert "readOnlyHint is not trusted" in c.reason


def test_seed_reasons_name_the_word_that_placed_them() -> None:
    reasons = {name: classify(ToolInfo(name, text)).reason for name, text in SEEDS.items()}
    assert reasons["destroy_connection"].startswith('name says "destroy"')
    assert reasons["PostgreSQL_kill_connection"].startswith('name says "kill"')
    assert "interrupts a live process or connection" in reasons["ip_control_drop_connections"]
    assert "who can reconnect" in reasons["terminate_user_connections"]
    assert all("\n" not in reason for reason in reasons.values())


def test_the_seeds_verbs_keep_their_verdicts_from_the_description_when_the_name_says_nothing() -> None:
    assert verdict("x1", SEEDS["destroy_connection"]) == (Category.DESTRUCTIVE, Risk.CRITICAL)
    assert verdict("x2", SEEDS["session_destroy"]) == (Category.DESTRUCTIVE, Risk.CRITICAL)  # "clean up"
    assert verdict("x3", SEEDS["PostgreSQL_kill_connection"]) == (Category.EXECUTE, Risk.HIGH)
    assert verdict("x4", SEEDS["ip_control_drop_connections"]) == (Category.EXECUTE, Risk.HIGH)
    assert verdict("x5", SEEDS["terminate_user_connections"]) == (Category.WRITE, Risk.MEDIUM)


# -- words -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "description", "expected"),
    [
        ("list_users", "", (Category.READ, Risk.LOW)),
        ("get_issue", "", (Category.READ, Risk.LOW)),
        ("search_files", "Search files. Does not delete anything.", (Category.READ, Risk.LOW)),
        ("getPullRequest", "", (Category.READ, Risk.LOW)),
        ("get_post", "", (Category.READ, Risk.LOW)),  # the first verb is the name's verb; "post" is its object
        ("list_runs", "", (Category.READ, Risk.LOW)),
        ("list_files", "Lists files; deleted files are not shown.", (Category.READ, Risk.LOW)),
        ("weather", "Returns the forecast for a city.", (Category.READ, Risk.LOW)),
        ("create_issue", "", (Category.WRITE, Risk.MEDIUM)),
        ("update_record", "", (Category.WRITE, Risk.MEDIUM)),
        ("close_issue", "", (Category.WRITE, Risk.MEDIUM)),  # can be reopened
        ("counter", "Increment the server's counter and return it.", (Category.WRITE, Risk.MEDIUM)),
        ("suspend_user", "", (Category.WRITE, Risk.MEDIUM)),
        ("kick_member", "Kicks a member from the voice channel.", (Category.WRITE, Risk.MEDIUM)),
        ("run_tests", "", (Category.EXECUTE, Risk.HIGH)),
        ("exec_command", "Run a shell command.", (Category.EXECUTE, Risk.HIGH)),
        ("execute_sql", "Execute a SQL statement against the database.", (Category.EXECUTE, Risk.HIGH)),
        ("send_email", "", (Category.EXECUTE, Risk.HIGH)),
        ("close_connection", "", (Category.EXECUTE, Risk.HIGH)),  # a live object is interrupted
        ("cancel_query", "Cancel a running query by PID.", (Category.EXECUTE, Risk.HIGH)),
        ("kill_user_process", "", (Category.EXECUTE, Risk.HIGH)),  # a process, even a user's
        ("delete_record", "Delete one record.", (Category.DESTRUCTIVE, Risk.CRITICAL)),
        ("drop_table", "Drop a table.", (Category.DESTRUCTIVE, Risk.CRITICAL)),
        ("purge_cache", "", (Category.DESTRUCTIVE, Risk.CRITICAL)),
        ("clean_up_workspace", "", (Category.DESTRUCTIVE, Risk.CRITICAL)),
        ("terminate_instance", "Terminate an EC2 instance.", (Category.DESTRUCTIVE, Risk.CRITICAL)),
        ("reset_db", "Reset the database. This cannot be undone.", (Category.DESTRUCTIVE, Risk.CRITICAL)),
        ("revoke_api_token", "", (Category.DESTRUCTIVE, Risk.HIGH)),
        ("remove_label", "", (Category.DESTRUCTIVE, Risk.HIGH)),
        ("sync_repo", "Sync the repository; removes local branches gone upstream.", (Category.DESTRUCTIVE, Risk.HIGH)),
    ],
)
def test_words_place_a_tool_without_annotations(name: str, description: str, expected: tuple[Category, Risk]) -> None:
    assert verdict(name, description) == expected


def test_the_most_severe_verb_wins() -> None:
    c = classify(ToolInfo("archive_and_purge", "Archive old rows, then purge them."))
    assert (c.category, c.risk) == (Category.DESTRUCTIVE, Risk.CRITICAL)
    assert '"purge"' in c.reason


def test_danger_words_count_anywhere_in_the_description_but_not_when_negated() -> None:
    assert verdict("get_report", "Builds the report and deletes the draft.")[0] is Category.DESTRUCTIVE
    assert verdict("get_report", "Reads the report. It never deletes anything.")[0] is Category.READ


def test_touching_credentials_permissions_or_money_raises_the_risk_of_reads_and_writes() -> None:
    assert verdict("get_secret", "Get a secret value.") == (Category.READ, Risk.MEDIUM)
    assert verdict("update_user_role", "") == (Category.WRITE, Risk.HIGH)
    assert "credentials, permissions or money" in classify(ToolInfo("set_password")).reason


# -- annotations -------------------------------------------------------------------------------------------------------


def test_an_unannotated_tool_that_nothing_places_is_execute_high() -> None:
    c = classify(ToolInfo("frobnicate", "Does the thing."))
    assert (c.category, c.risk) == (Category.EXECUTE, Risk.HIGH)
    assert c.reason.startswith("no annotations")


def test_a_tool_only_hints_place_takes_its_hints() -> None:
    assert verdict("frobnicate", "", Hints(read_only=True)) == (Category.READ, Risk.LOW)
    assert verdict("frobnicate", "", WRITE) == (Category.WRITE, Risk.MEDIUM)
    assert verdict("frobnicate", "", DESTRUCTIVE) == (Category.DESTRUCTIVE, Risk.HIGH)
    assert "nothing in its name or description says otherwise" in classify(ToolInfo("x", "", READ_ONLY)).reason


def test_hints_that_say_nothing_useful_leave_an_unplaced_tool_risky() -> None:
    # readOnlyHint false alone may be destructive (the spec's default for destructiveHint is true).
    assert verdict("frobnicate", "", Hints(read_only=False)) == (Category.EXECUTE, Risk.HIGH)
    assert verdict("frobnicate", "", Hints(open_world=True, idempotent=True)) == (Category.EXECUTE, Risk.HIGH)


def test_a_servers_destructive_hint_is_believed_over_milder_words() -> None:
    c = classify(ToolInfo("update_record", "Update a record.", Hints(destructive=True)))
    assert (c.category, c.risk) == (Category.DESTRUCTIVE, Risk.HIGH)
    assert "destructiveHint" in c.reason and '"update": write' in c.reason


def test_a_read_only_claim_cannot_lower_any_risky_word() -> None:
    for name in ("delete_user", "drop_database", "kill_process", "terminate_job", "revoke_key", "purge_queue"):
        c = classify(ToolInfo(name, "", Hints(read_only=True, destructive=False)))
        assert c.category is not Category.READ, name
        assert "readOnlyHint is not trusted" in c.reason


def test_a_non_destructive_claim_cannot_lower_a_destroy_word() -> None:
    assert verdict("delete_repo", "", WRITE) == (Category.DESTRUCTIVE, Risk.CRITICAL)


def test_a_read_tool_the_server_says_changes_state_is_a_write() -> None:
    assert verdict("get_or_create_user", "", WRITE) == (Category.WRITE, Risk.MEDIUM)


def test_an_open_world_write_that_is_not_idempotent_is_high_risk() -> None:
    hints = Hints(read_only=False, destructive=False, idempotent=False, open_world=True)
    c = classify(ToolInfo("create_issue", "Create a GitHub issue.", hints))
    assert (c.category, c.risk) == (Category.WRITE, Risk.HIGH)
    assert "openWorldHint" in c.reason


def test_the_demo_servers_annotated_tools_are_classified_as_its_comments_intend() -> None:
    assert verdict("list_connections", "List active database connections.", READ_ONLY) == (Category.READ, Risk.LOW)
    assert verdict("get_connection", "Show one database connection by id.", READ_ONLY) == (Category.READ, Risk.LOW)
    assert verdict("execute_sql", "Execute a SQL statement against the database.", EXECUTE) == (
        Category.EXECUTE,
        Risk.HIGH,
    )
