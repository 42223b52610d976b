from __future__ import annotations

from components.pool_config import pool_from_dict


def test_logged_settings_never_show_a_password() -> None:
    pool = pool_from_dict(
        "pg",
        {"kind": "postgres", "target": "db:5432", "user": "bench", "password": "s3cret", "password_file": "/run/pw"},
    )
    shown = pool.as_dict()
    assert shown["password"] == "***"
    assert shown["password_file"] == "/run/pw"
    assert "s3cret" not in repr(shown)
    assert pool.options["password"] == "s3cret"  # still there for the session opener
