"""The reports' derived tables stay in step with ``LeadSource`` however its rows come and go."""

from __future__ import annotations

import typing as t
from datetime import date

import pytest
import sqlalchemy as sa
from flask_utm_tracker import reports, rollup

from .builders import MARCH, add_user, at, build, by_key, touch
from .conftest import HostApp, make_app
from .helpers import login


def first_by_channel(env: HostApp, **span: t.Any) -> dict[str, float]:
    return by_key(reports.leads(env.tracker, "channel", model="first", **span))


def leads_table(env: HostApp) -> dict[t.Any, tuple[int, int]]:
    lead = rollup.models(env.tracker.LeadSource)[0]
    rows = env.db.session.execute(sa.select(lead.user_id, lead.rows, lead.max_id)).all()
    return {row.user_id: (row.rows, row.max_id) for row in rows}


def day_tables(env: HostApp) -> tuple[list[t.Any], list[t.Any]]:
    lead, day = rollup.models(env.tracker.LeadSource)[:2]
    session = env.db.session
    return (
        sorted(tuple(r) for r in session.execute(sa.select(*lead.__table__.c))),
        sorted(tuple(r) for r in session.execute(sa.select(*day.__table__.c))),
    )


def test_a_login_writes_the_users_lead_row(env: HostApp) -> None:
    client = env.app.test_client()
    client.get("/landing?utm_source=google&utm_medium=cpc")
    login(client)
    with env.app.app_context():
        ann = env.db.session.scalar(sa.select(env.User.id))
        assert leads_table(env) == {ann: (1, 1)}
        assert first_by_channel(env) == {"Paid Search": 1}
    client.get("/landing?utm_source=newsletter&utm_medium=email")  # after the sign-up
    with env.app.app_context():
        assert leads_table(env) == {ann: (2, 2)}
        assert first_by_channel(env) == {"Paid Search": 1}
        assert reports.totals(env.tracker).touches == 1


def test_orm_writes_and_deletes_keep_the_days_in_step(env: HostApp) -> None:
    with env.app.app_context():
        build(env)
        assert first_by_channel(env, **MARCH) == {"Paid Search": 1, "Email": 1, "Referral": 1}
        # Another touch of ann's, earlier than her first: a day already computed changes.
        ann = env.db.session.scalar(sa.select(env.User.id).where(env.User.email.like("ann%")))
        lead_model = env.tracker.LeadSource
        env.db.session.add(
            lead_model(
                user_id=ann, touch_id="early", **touch("Email", "n", "email", at(1, hour=1), at(5))
            )
        )
        env.db.session.commit()
        assert first_by_channel(env, **MARCH) == {"Email": 2, "Referral": 1}
        # Deleting it through the ORM gives the old answer back.
        early = env.db.session.scalar(sa.select(lead_model).where(lead_model.touch_id == "early"))
        env.db.session.delete(early)
        env.db.session.commit()
        assert first_by_channel(env, **MARCH) == {"Paid Search": 1, "Email": 1, "Referral": 1}


def test_deleting_a_user_in_the_database_drops_their_lead(env: HostApp) -> None:
    with env.app.app_context():
        build(env)
        assert reports.totals(env.tracker, **MARCH).leads == 3
        engine = env.db.engine
        with engine.begin() as conn:
            if engine.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
            users = env.User.__table__
            conn.execute(sa.delete(users).where(users.c.email == "bob@example.com"))
        assert first_by_channel(env, **MARCH) == {"Paid Search": 1, "Referral": 1}
        assert reports.totals(env.tracker, **MARCH).leads == 2


def test_rows_written_around_the_extension_reach_reports_after_rebuild(env: HostApp) -> None:
    """A bulk INSERT (a migration, an import) reaches the reports after ``flask utm rebuild``;
    a report never writes it in on its own."""
    with env.app.app_context():
        build(env)
        assert reports.totals(env.tracker).leads == 4
        user = env.User(email="zed@example.com")
        env.db.session.add(user)
        env.db.session.commit()
        with env.db.engine.begin() as conn:
            conn.execute(
                sa.insert(env.tracker.LeadSource.__table__),
                [
                    {"user_id": user.id, "touch_id": "bulk", "click_ids": {}, "custom_tags": {},
                     **touch("Display", "ads", "display", at(7), at(8))},
                ],
            )  # fmt: skip
        assert reports.totals(env.tracker).leads == 4
    assert env.app.test_cli_runner().invoke(args=["utm", "rebuild"]).exit_code == 0
    with env.app.app_context():
        assert first_by_channel(env, start=date(2024, 3, 8), end=date(2024, 3, 8)) == {"Display": 1}
        assert reports.totals(env.tracker).leads == 5


def test_reports_and_the_dashboard_only_read(env: HostApp) -> None:
    """No report writes or locks, so that reports can run on a read replica; a day whose users
    were deleted behind the tables' back is computed in the query instead."""
    with env.app.app_context():
        build(env)
        engine = env.db.engine
        with engine.begin() as conn:
            if engine.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
            users = env.User.__table__
            conn.execute(sa.delete(users).where(users.c.email == "bob@example.com"))
        statements: list[str] = []

        def seen(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
            statements.append(statement.lstrip().split(None, 1)[0].upper())

        sa.event.listen(engine, "before_cursor_execute", seen)
        try:
            assert first_by_channel(env, **MARCH) == {"Paid Search": 1, "Referral": 1}
            assert reports.totals(env.tracker, **MARCH).leads == 2
            reports.summary(env.tracker, start=MARCH["start"], end=MARCH["end"])
        finally:
            sa.event.remove(engine, "before_cursor_execute", seen)
    assert statements and set(statements) <= {"SELECT", "WITH"}, set(statements)


def test_rebuild_makes_the_same_tables(env: HostApp) -> None:
    with env.app.app_context():
        build(env)
        env.db.session.remove()
    refreshed = env.app.test_cli_runner().invoke(args=["utm", "refresh"])
    assert "Stored the report numbers of 4 sign-up days." in refreshed.stdout
    with env.app.app_context():
        before = day_tables(env)
        env.db.session.remove()
    result = env.app.test_cli_runner().invoke(args=["utm", "rebuild"])
    assert result.exit_code == 0, result.output
    assert "Rebuilt the report tables: 4 leads over 4 sign-up days." in result.stdout
    with env.app.app_context():
        assert day_tables(env) == before


def test_rebuild_after_rows_deleted_around_the_extension(env: HostApp) -> None:
    with env.app.app_context():
        build(env)
        assert reports.totals(env.tracker, **MARCH).leads == 3
        lead = env.tracker.LeadSource.__table__
        with env.db.engine.begin() as conn:
            conn.execute(sa.delete(lead).where(lead.c.channel == "Referral"))
        env.db.session.remove()
    assert env.app.test_cli_runner().invoke(args=["utm", "rebuild"]).exit_code == 0
    with env.app.app_context():
        # eve's one touch left was recorded on the 16th: her sign-up moves there.
        assert first_by_channel(env, **MARCH) == {"Paid Search": 1, "Email": 1, "Organic Search": 1}
        assert first_by_channel(env, start=date(2024, 3, 15), end=date(2024, 3, 15)) == {}
        assert first_by_channel(env) == {"Paid Search": 1, "Email": 1, "Organic Search": 2}


def test_erase_drops_the_users_lead(env: HostApp) -> None:
    with env.app.app_context():
        build(env)
        bob = env.db.session.scalar(sa.select(env.User.id).where(env.User.email.like("bob%")))
        assert first_by_channel(env, **MARCH) == {"Paid Search": 1, "Email": 1, "Referral": 1}
        env.db.session.remove()
    result = env.app.test_cli_runner().invoke(args=["utm", "erase", "--user", str(bob), "--yes"])
    assert result.exit_code == 0, result.output
    with env.app.app_context():
        assert bob not in leads_table(env)
        assert first_by_channel(env, **MARCH) == {"Paid Search": 1, "Referral": 1}


def test_sign_up_created_at_in_step(db_url: str) -> None:
    from .builders import make_app_with_signup

    env = make_app_with_signup(db_url)
    with env.app.app_context():
        add_user(
            env, "fay@example.com", touch("Email", "n", "email", at(1), at(3)), created_at=at(2)
        )
        lead = rollup.models(env.tracker.LeadSource)[0]
        assert env.db.session.scalar(sa.select(lead.signup_day)) == date(2024, 3, 2)
        assert add_user is not None
        assert by_key(reports.leads(env.tracker, start=date(2024, 3, 2), end=date(2024, 3, 2))) == {
            "Email": 1
        }


def _read_only(url: str) -> str:
    """The same database, opened read only (the stand-in for a read replica)."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"sqlite:///file:{parsed.database}?mode=ro&uri=true"
    options = parsed.query.get("options", "")
    options = f"{options} -cdefault_transaction_read_only=on".strip()
    return parsed.update_query_dict({"options": options}).render_as_string(hide_password=False)


def test_reports_read_from_a_replica_bind(db_url: str) -> None:
    env = make_app(
        db_url,
        SQLALCHEMY_BINDS={"replica": _read_only(db_url)},
        UTM_TRACKER_REPORTS_BIND="replica",
    )
    with env.app.app_context():
        build(env)
        replica = env.db.engines["replica"]
        used: list[str] = []
        sa.event.listen(replica, "before_cursor_execute", lambda *a: used.append(a[2]))
        assert first_by_channel(env, **MARCH) == {"Paid Search": 1, "Email": 1, "Referral": 1}
        assert reports.totals(env.tracker, **MARCH).leads == 3
        assert used  # the replica answered


def test_an_unknown_reports_bind_is_a_config_error(db_url: str) -> None:
    from flask_utm_tracker import ConfigError

    with pytest.raises(ConfigError, match="REPORTS_BIND"):
        make_app(db_url, UTM_TRACKER_REPORTS_BIND="replica")


def test_a_login_leaves_its_day_to_refresh_and_reports_stay_right(env: HostApp) -> None:
    """A login writes the user's Lead row only: recomputing the sign-up day would cost as much
    as the day's sign-ups. Reports compute the stale day in their query; refresh stores it."""
    client = env.app.test_client()
    client.get("/landing?utm_source=google&utm_medium=cpc")
    login(client)
    with env.app.app_context():
        assert rollup.stale_days(env.db.session, env.tracker.LeadSource, None, None) != []
        assert first_by_channel(env) == {"Paid Search": 1}
    runner = env.app.test_cli_runner()
    assert "of 1 sign-up days" in runner.invoke(args=["utm", "refresh"]).stdout
    with env.app.app_context():
        assert rollup.stale_days(env.db.session, env.tracker.LeadSource, None, None) == []
        assert first_by_channel(env) == {"Paid Search": 1}
    assert "of 0 sign-up days" in runner.invoke(args=["utm", "refresh"]).stdout
