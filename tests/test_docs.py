"""The documentation builds with no warning, its examples run, and what it lists matches the code.

The configuration table, the HTTP API, the CLI reference and the model columns are generated from
the package when the docs build (docs/_ext/utm_docs.py), so the build itself is the first check;
the tests below cover what is written by hand.
"""

from __future__ import annotations

import ast
import doctest
import re
import subprocess
import sys
import zipfile
from html import unescape
from pathlib import Path

import flask_utm_tracker
import pytest
from blinker import NamedSignal
from flask import Flask
from flask_login import UserMixin
from flask_sqlalchemy import SQLAlchemy
from flask_utm_tracker import ConfigError, UTMTracker, signals
from flask_utm_tracker.config import DEFAULTS
from flask_utm_tracker.openapi import make_spec

from .conftest import POSTGRES_VAR, REDIS_VAR

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = {path.name: path.read_text("utf-8") for path in DOCS.glob("*.rst")}


@pytest.fixture(scope="module")
def html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The docs built as ``make docs`` builds them: warnings are errors."""
    out = tmp_path_factory.mktemp("html")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", DOCS, out],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return out


def test_docs_build_with_no_warning(html: Path) -> None:
    for page in ["index", "quickstart", "configuration", "http", "cli", "api", "changes"]:
        assert (html / f"{page}.html").is_file(), page


def table_cells(page: str) -> list[list[str]]:
    """The text of each table row's cells in an HTML page."""
    rows = []
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", page, re.DOTALL):
        cells = re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.DOTALL)
        rows.append([unescape(re.sub(r"<[^>]+>", "", cell)).strip() for cell in cells])
    return rows


def test_the_configuration_table_lists_every_key_and_default(html: Path) -> None:
    rows = table_cells((html / "configuration.html").read_text("utf-8"))
    table = {row[0]: row[1] for row in rows if row and row[0].startswith("UTM_TRACKER_")}
    assert list(table) == list(DEFAULTS)
    for key, default in DEFAULTS.items():
        assert ast.literal_eval(table[key]) == default, key


def test_the_http_page_shows_every_route_and_status_of_the_openapi_document(html: Path) -> None:
    page = (html / "http.html").read_text("utf-8")
    for path, operations in make_spec("/utm")["paths"].items():
        for method, operation in operations.items():
            assert f"{method.upper()} {path}" in page
            for status in operation["responses"]:
                assert f'<span class="pre">{status}</span>' in page
    assert (html / "_downloads").is_dir()


def test_the_cli_page_shows_every_command(html: Path) -> None:
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        from utm_docs import cli
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    page = (html / "cli.html").read_text("utf-8")
    for name in cli.commands:
        assert f'id="flask-utm-{name}"' in page, name


def test_the_changes_page_includes_changes_rst(html: Path) -> None:
    page = (html / "changes.html").read_text("utf-8")
    assert "Version 0.1.0" in page and "Unreleased" in page


@pytest.mark.parametrize("name", sorted(name for name, text in PAGES.items() if ">>> " in text))
def test_the_examples_of_a_page_run(name: str) -> None:
    result = doctest.testfile(str(DOCS / name), module_relative=False, verbose=False)
    assert result.attempted and not result.failed


def test_the_documented_config_error_is_the_real_one() -> None:
    (message,) = re.findall(r"# ConfigError: (.*?) \.\.\.", PAGES["configuration.rst"])
    db = SQLAlchemy()

    class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
        id = db.Column(db.Integer, primary_key=True)

    app = Flask(__name__)
    app.config["UTM_TRACKER_COOKIE_DOMIAN"] = ".example.com"
    with pytest.raises(ConfigError) as caught:
        UTMTracker(db=db, user_model=User).init_app(app)
    assert str(caught.value).startswith(message)


def test_every_signal_is_documented_and_exported() -> None:
    found = {name for name, value in vars(signals).items() if isinstance(value, NamedSignal)}
    assert found
    for name in found:
        assert f".. data:: flask_utm_tracker.{name}" in PAGES["signals.rst"], name
        assert getattr(flask_utm_tracker, name) is getattr(signals, name)


def test_every_snippet_option_is_a_documented_attribute() -> None:
    """The snippet's ``Options`` typedef (in whichever source file defines it) names exactly the
    ``data-*`` attributes of snippet.rst's table."""
    typedefs = [
        match.group(1)
        for path in sorted((ROOT / "snippet" / "src").glob("*.js"))
        for match in re.finditer(
            r"@typedef \{\{((?:(?!\}\}).)*)\}\} Options\b", path.read_text("utf-8"), re.DOTALL
        )
    ]
    assert len(typedefs) == 1, "one Options typedef in snippet/src"
    options = re.findall(r"(\w+)\?:", typedefs[0])
    assert "endpoint" in options
    attributes = re.findall(r"^   \* - ``(data-[a-z-]+)", PAGES["snippet.rst"], re.MULTILINE)
    kebab = {"data-" + re.sub(r"[A-Z]", lambda m: "-" + m.group().lower(), o) for o in options}
    assert kebab == set(attributes)


def test_every_configuration_key_the_docs_name_exists() -> None:
    named = {
        key
        for text in PAGES.values()
        for key in re.findall(r"UTM_TRACKER_[A-Z0-9_]*[A-Z0-9]", text)
    }
    misspelled = "UTM_TRACKER_COOKIE_DOMIAN"  # the example of the error a misspelling raises
    unknown = named - set(DEFAULTS) - {POSTGRES_VAR, REDIS_VAR, misspelled}
    assert not unknown


def test_the_docs_cite_no_file_outside_the_repository() -> None:
    texts = {**PAGES, **{p.name: p.read_text("utf-8") for p in (DOCS / "_ext").glob("*.py")}}
    for name, text in texts.items():
        assert not re.search(r"\.\./shared|DESIGN\.md|/work/|shared/data", text), name


def test_the_wheel_carries_the_license(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        licenses = [n for n in archive.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
        assert len(licenses) == 1
        assert archive.read(licenses[0]) == (ROOT / "LICENSE").read_bytes()
        (meta,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(meta).decode("utf-8")
    assert "License-Expression: MIT" in metadata
    assert "License-File: LICENSE" in metadata
    assert "MIT License" in (ROOT / "LICENSE").read_text("utf-8")
