"""The wheel built from the repository carries everything the package needs at run time."""
# ruff: noqa: E501  (CHECK is a script run from the installed wheel)

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHECK = r"""
import sqlalchemy as sa
from flask import Flask
from flask_login import LoginManager, UserMixin
from flask_sqlalchemy import SQLAlchemy
import flask_utm_tracker
from flask_utm_tracker import UTMTracker
from flask_utm_tracker.classify import classify_referrer

assert "site-packages" not in flask_utm_tracker.__file__ and "wheel-target" in flask_utm_tracker.__file__
app = Flask(__name__)
app.config.update(SECRET_KEY="x", SQLALCHEMY_DATABASE_URI="sqlite://")
db = SQLAlchemy(app)
class User(UserMixin, db.Model):
    id = sa.Column(sa.Integer, primary_key=True)
LoginManager(app).user_loader(lambda uid: None)
tracker = UTMTracker(app, db=db, user_model=User)
tracker.dashboard_permission(lambda: True)
with app.app_context():
    db.create_all()
client = app.test_client()
assert client.get("/utm/snippet.js").status_code == 200
for part in ("full", "debug", "link", "spa", "answer"):
    assert client.get(f"/utm/snippet-{part}.js").status_code == 200, part
assert client.get("/utm/").status_code == 200
assert client.get("/utm/openapi.json").json["openapi"].startswith("3.")
assert classify_referrer("https://www.google.com/search?q=x").source == "google"
print("wheel ok")
"""


def test_wheel_has_the_runtime_files(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in [
        "flask_utm_tracker/py.typed",
        "flask_utm_tracker/static/snippet.js",
        "flask_utm_tracker/static/snippet-full.js",
        "flask_utm_tracker/static/snippet-debug.js",
        "flask_utm_tracker/static/snippet-link.js",
        "flask_utm_tracker/static/snippet-spa.js",
        "flask_utm_tracker/static/snippet-answer.js",
        "flask_utm_tracker/data/params.json",
        "flask_utm_tracker/data/matomo-SearchEngines.yml",
        "flask_utm_tracker/data/matomo-LICENSE",
        "flask_utm_tracker/templates/utm_tracker/dashboard.html",
    ]:
        assert required in names, required
    target = tmp_path / "wheel-target"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "wheel ok" in result.stdout
