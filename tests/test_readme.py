"""The README's quickstart runs as written, and its other facts hold.

The quickstart's files are the README's ``python title="..."`` code blocks: they are written to a
fresh directory and run there, as a newcomer would after installing the package.
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import metadata
from pathlib import Path

from flask_utm_tracker.config import DEFAULTS

from .conftest import POSTGRES_VAR, REDIS_VAR

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text("utf-8")
#: The installed distribution's metadata (pyproject.toml's [project], as pip read it).
METADATA = metadata("flask-utm-tracker")


def titled_blocks(markdown: str) -> dict[str, str]:
    """The fenced code blocks that carry a ``title="name"``, by name."""
    pattern = re.compile(r'^```\w+ title="([^"]+)"\n(.*?)^```$', re.MULTILINE | re.DOTALL)
    return {name: body for name, body in pattern.findall(markdown)}


def console_block(markdown: str) -> tuple[str, str]:
    """The command and the output of the README's ``console`` block."""
    (block,) = re.findall(r"^```console\n(.*?)^```$", markdown, re.MULTILINE | re.DOTALL)
    command, _, output = block.partition("\n")
    return command.removeprefix("$ "), output


def test_quickstart_runs_as_written_in_a_fresh_directory(tmp_path: Path) -> None:
    blocks = titled_blocks(README)
    assert set(blocks) == {"app.py", "try_it.py"}
    for name, body in blocks.items():
        (tmp_path / name).write_text(body, "utf-8")
    command, expected = console_block(README)
    assert command == "python try_it.py"
    result = subprocess.run(
        [sys.executable, "try_it.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected
    # Where the README says the database lands.
    assert "`instance/app.db`" in README
    assert (tmp_path / "instance" / "app.db").is_file()
    assert not (tmp_path / "app.db").exists()


def test_the_readme_quickstart_is_the_documentation_quickstart() -> None:
    for name, body in titled_blocks(README).items():
        assert (ROOT / "docs" / "quickstart" / name).read_text("utf-8") == body, name


def test_the_install_line_names_this_repository() -> None:
    urls = dict(url.split(", ", 1) for url in METADATA.get_all("Project-URL") or [])
    source, name = urls["Source"], METADATA["Name"]
    assert f'pip install "{name} @ git+{source}"' in README
    assert "pip install -e ." in README


def test_the_two_commands_and_ci_exist_as_described() -> None:
    makefile = (ROOT / "Makefile").read_text("utf-8")
    for target in ("demo", "test", "docs"):
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), target
        assert f"make {target}" in README
    ci = (ROOT / ".ci" / "run").read_text("utf-8")
    for var in (POSTGRES_VAR, REDIS_VAR):
        assert f"export {var}=" in ci
        assert var in README
    assert re.search(r"^make test$", ci, re.MULTILINE)
    assert "CI (`.ci/run`) sets both" in README


def test_every_configuration_key_the_readme_names_exists() -> None:
    named = set(re.findall(r"UTM_TRACKER_[A-Z0-9_]+", README))
    assert named - {POSTGRES_VAR, REDIS_VAR} <= set(DEFAULTS)


def test_the_readme_cites_no_file_outside_the_repository() -> None:
    assert not re.search(r"\.\./|DESIGN\.md|/work/|shared/", README)


def test_the_deployment_section_states_the_defaults_the_code_has() -> None:
    """The README's figures for the rate limit are the ones the extension runs with."""
    import inspect

    from flask_utm_tracker import abuse, config

    section = " ".join(README.split("## Deploying", 1)[1].split("\n## ", 1)[0].split())
    breaker = inspect.signature(abuse.RateLimiter.__init__).parameters["cooldown"].default
    assert f"`{config.RATE_LIMIT}`" in section
    assert f"by its /{config.RATE_LIMIT_IPV6_PREFIX} network" in section
    assert f"{config.RATE_LIMIT_IPV6_PREFIX} by default" in section
    assert f"at most {config.RATE_LIMIT_MAX_CLIENTS:,} clients" in section
    assert f"at most {config.RATE_LIMIT_TIMEOUT * 1000:.0f} ms" in section
    assert f"unlimited for {breaker:.0f} seconds" in section
    for key in ("RATE_LIMIT", "RATE_LIMIT_IPV6_PREFIX", "RATE_LIMIT_MAX_CLIENTS"):
        assert f"`UTM_TRACKER_{key}`" in section
