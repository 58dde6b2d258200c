"""Id prefixes on a real database, SQLite and PostgreSQL: the range of ids a prefix stands for means the same."""

import json
import uuid
from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from approvals import prefixes
from approvals.errors import AmbiguousId, ApprovalNotFound, GrantNotFound, IdTooShort
from approvals.models import ApprovalRequest, utcnow

IDS = (
    "3f2c1a9b-0000-4000-8000-000000000001",
    "3f2c1a9b-0000-4000-8000-000000000002",
    "3f2c1a9c-0000-4000-8000-000000000000",
    "ffffffff-ffff-4fff-bfff-ffffffffffff",
)


def add_requests(engine: Engine) -> None:
    with Session(engine) as session:
        for i, given in enumerate(IDS):
            session.add(
                ApprovalRequest(
                    id=uuid.UUID(given),
                    server="s",
                    tool="t",
                    identity="a",
                    arguments=json.dumps({"n": i}),
                    args_digest=f"{i:064d}",
                    deadline=utcnow() + timedelta(minutes=5),
                )
            )
        session.commit()


def test_a_unique_prefix_names_one_request_and_others_are_refused_saying_why(engine: Engine) -> None:
    add_requests(engine)
    with Session(engine) as session:
        assert prefixes.request_id(session, "3f2c1a9c") == uuid.UUID(IDS[2])
        assert prefixes.request_id(session, "ffffffff") == uuid.UUID(IDS[3])  # the top of the range, inclusive
        assert prefixes.request_id(session, IDS[1]) == uuid.UUID(IDS[1])
        assert prefixes.request_id(session, IDS[0].replace("-", "").upper()) == uuid.UUID(IDS[0])
        with pytest.raises(AmbiguousId) as ambiguous:
            prefixes.request_id(session, "3f2c1a9b")
        with pytest.raises(IdTooShort):
            prefixes.request_id(session, "3f2c1a9")
        with pytest.raises(ApprovalNotFound):
            prefixes.request_id(session, "00000000")
        with pytest.raises(ApprovalNotFound):
            prefixes.request_id(session, "not-an-id-at-all")
        with pytest.raises(GrantNotFound):
            prefixes.grant_id(session, "3f2c1a9c")

    assert ambiguous.value.matches == list(IDS[:2])
