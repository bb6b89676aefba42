"""Sphinx directives that render reference tables from the package itself, so they cannot drift.

- ``.. utm-config::``: every configuration key, from ``flask_utm_tracker.config.DEFAULTS`` and
  the ``#:`` comment above each constant in ``config.py`` (read by Sphinx's own source analyser,
  as autodoc reads it).
- ``.. utm-params::``: the tracked utm_* parameters and click IDs (``data/params.json``) with the
  source and medium each click ID stands for (``channels.CLICK_ID_SOURCES``).
- ``.. utm-channels::``: the channels, in the order their rules are evaluated.
- ``.. utm-openapi::``: the routes and schemas of the OpenAPI document the app serves.

``cli`` is the ``flask utm`` command group, for sphinx-click.
"""

from __future__ import annotations

import json
import typing as t

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.pycode import ModuleAnalyzer
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles


def literal(value: t.Any) -> str:
    """``value`` as a Python literal in reST inline code."""
    if isinstance(value, str):
        text = json.dumps(value)
    elif isinstance(value, (list, tuple)):
        text = (
            "[" + ", ".join(json.dumps(v) if isinstance(v, str) else repr(v) for v in value) + "]"
        )
    else:
        text = repr(value)
    return f"``{text}``"


def config_rows() -> list[tuple[str, t.Any, str]]:
    """``(key, default, description)`` of every configuration key, in ``config.py``'s order."""
    from flask_utm_tracker import config

    docs = ModuleAnalyzer.for_module(config.__name__).find_attr_docs()
    rows = []
    for key, default in config.DEFAULTS.items():
        name = key[len(config.PREFIX) :]
        lines = docs.get(("", name))
        if not lines:
            raise ValueError(f"{name} in flask_utm_tracker/config.py has no '#:' comment.")
        rows.append((key, default, " ".join(line.strip() for line in lines if line.strip())))
    return rows


class _Generated(SphinxDirective):
    """A directive whose content is reST made by :meth:`lines`."""

    has_content = False

    def lines(self) -> list[str]:
        raise NotImplementedError

    def run(self) -> list[nodes.Node]:
        container = nodes.container()
        nested_parse_with_titles(self.state, StringList(self.lines(), "<generated>"), container)
        return container.children


def _table(headers: list[str], rows: list[list[str]], widths: str) -> list[str]:
    out = [".. list-table::", "   :header-rows: 1", f"   :widths: {widths}", ""]
    for row in [headers, *rows]:
        out.append(f"   * - {row[0]}")
        out.extend(f"     - {cell}" for cell in row[1:])
    return [*out, ""]


class ConfigTable(_Generated):
    """The configuration keys, their defaults and what they do."""

    def lines(self) -> list[str]:
        rows = [[f"``{key}``", literal(value), text] for key, value, text in config_rows()]
        return _table(["Key", "Default", "What it does"], rows, "42 18 40")


class ParamsTable(_Generated):
    """The tracked parameters."""

    def lines(self) -> list[str]:
        from flask_utm_tracker.channels import CLICK_ID_SOURCES
        from flask_utm_tracker.params import CLICK_IDS, UTM_PARAMS

        utm = ", ".join(f"``{name}``" for name in UTM_PARAMS)
        rows = []
        for name in CLICK_IDS:
            pair = CLICK_ID_SOURCES.get(name)
            meaning = f"{pair[0]} / {pair[1]}" if pair else "none: kept in ``click_ids`` only"
            rows.append([f"``{name}``", meaning])
        return [
            f"**utm parameters**: {utm}.",
            "",
            "**Click IDs**, with the source / medium each stands for when the URL has no utm_*"
            " values:",
            "",
            *_table(["Click ID", "source / medium"], rows, "40 60"),
        ]


class ChannelList(_Generated):
    """The channels, in the order their rules are evaluated."""

    def lines(self) -> list[str]:
        from flask_utm_tracker.channels import CHANNELS

        return [f"{i}. {name}" for i, name in enumerate(CHANNELS, 1)] + [""]


def _type(schema: t.Mapping[str, t.Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f":ref:`{name} <openapi-schema-{name.lower()}>`"
    kind = schema.get("type", "any")
    if isinstance(kind, list):
        kind = " or ".join(k for k in kind if k != "null") + (" or null" if "null" in kind else "")
    if kind == "array" and "items" in schema:
        return f"array of {_type(schema['items'])}"
    if schema.get("format"):
        kind = f"{kind} ({schema['format']})"
    return str(kind)


#: JSON Schema keywords shown in the "Rules" column, with how they read.
_RULES = {
    "pattern": "matches ``{}``",
    "minLength": "at least {} characters",
    "maxLength": "at most {} characters",
    "minItems": "at least {} items",
    "maxItems": "at most {} items",
    "maxProperties": "at most {} entries",
    "enum": "one of {}",
    "default": "default {}",
}


def _rules(schema: t.Mapping[str, t.Any]) -> str:
    parts = []
    for key, text in _RULES.items():
        if key in schema and not (key == "default" and schema[key] is None):
            value = schema[key]
            if key == "enum":
                value = ", ".join(f"``{v}``" for v in value)
            elif key == "default":
                value = literal(value)
            parts.append(text.format(value))
    return "; ".join(parts)


def _sentence(text: str) -> str:
    return f"{text[0].upper()}{text[1:]}." if text else ""


class OpenAPI(_Generated):
    """Each route of the OpenAPI document, then each schema."""

    def lines(self) -> list[str]:
        from flask_utm_tracker.openapi import make_spec

        spec = make_spec("/utm")
        out: list[str] = []
        for path, operations in spec["paths"].items():
            for method, op in operations.items():
                title = f"{method.upper()} {path}"
                out += [f".. _openapi-{method}-{path.strip('/').replace('/', '-')}:", ""]
                out += [title, "-" * len(title), "", f"**{op['summary']}**", ""]
                if op.get("description"):
                    out += [op["description"], ""]
                params = op.get("parameters", [])
                if params:
                    rows = [
                        [
                            f"``{p['name']}``",
                            _type(p["schema"]),
                            p.get("description", ""),
                            _rules(p["schema"]),
                        ]
                        for p in params
                    ]
                    out += ["Query parameters:", ""]
                    out += _table(["Name", "Type", "What", "Rules"], rows, "15 15 40 30")
                body = op.get("requestBody")
                if body:
                    types = ", ".join(f"``{k}``" for k in body["content"])
                    schema = _type(next(iter(body["content"].values()))["schema"])
                    out += [f"Request body: {schema}, sent as {types}.", ""]
                rows = []
                for status, answer in op["responses"].items():
                    content = answer.get("content", {}).get("application/json")
                    rows.append(
                        [
                            f"``{status}``",
                            answer["description"],
                            _type(content["schema"]) if content else "(no body)",
                        ]
                    )
                out += ["Responses:", ""]
                out += _table(["Status", "When", "Body"], rows, "10 60 30")
        title = "Schemas"
        out += [title, "-" * len(title), ""]
        for name, schema in spec["components"]["schemas"].items():
            out += [f".. _openapi-schema-{name.lower()}:", "", name, "~" * len(name), ""]
            required = set(schema.get("required", []))
            rows = [
                [
                    f"``{field}``",
                    _type(prop),
                    "yes" if field in required else "no",
                    " ".join(filter(None, [prop.get("description", ""), _sentence(_rules(prop))])),
                ]
                for field, prop in schema.get("properties", {}).items()
            ]
            out += _table(["Field", "Type", "Required", "What"], rows, "18 22 10 50")
            for alternative in schema.get("anyOf", []):
                (need,) = alternative["required"]
                if alternative is schema["anyOf"][0]:
                    out += ["At least one of these is present and not empty:", ""]
                out += [f"- ``{need}``"]
            if schema.get("anyOf"):
                out += [""]
        return out


def _make_tracker() -> t.Any:
    """A tracker on a throwaway ``db``: its models and commands, no app needed."""
    import sqlalchemy as sa
    from flask_sqlalchemy import SQLAlchemy
    from flask_utm_tracker import UTMTracker

    db = SQLAlchemy()

    class User(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "user"
        id = sa.Column(sa.Integer, primary_key=True)

    return UTMTracker(db=db, user_model=User)


tracker = _make_tracker()


def _make_cli() -> t.Any:
    from flask_utm_tracker.cli import make_cli

    return make_cli(tracker)


#: The ``flask utm`` command group, for sphinx-click.
cli = _make_cli()


class Columns(_Generated):
    """The columns of one of ``tracker``'s models, described by the directive's content.

    Each entry is ``name[, name...]: what``, continued on lines indented by one more space. Every
    column must be described, and only columns that exist: an error names the missing and unknown
    ones. With ``:in-progress:`` (a model still being built) a missing column is listed as such
    and an unknown one left out, instead.
    """

    required_arguments = 1
    has_content = True
    option_spec: t.ClassVar[dict[str, t.Any]] = {"in-progress": directives.flag}

    def lines(self) -> list[str]:
        model = getattr(tracker, self.arguments[0])
        table = model.__table__
        entries: list[str] = []
        for line in self.content:
            if line.startswith(" ") and entries:
                entries[-1] += " " + line.strip()
            elif line.strip():
                entries.append(line.strip())
        in_progress = "in-progress" in self.options
        described: set[str] = set()
        rows = []
        for entry in entries:
            names_part, colon, what = entry.partition(":")
            if not colon:
                raise self.error(f"{entry!r} needs 'name: what it holds'.")
            names = [n.strip() for n in names_part.split(",")]
            described.update(names)
            if in_progress:
                names = [n for n in names if n in table.c]
                if not names:
                    continue
            types = sorted({str(table.c[n].type) for n in names if n in table.c})
            cells = [", ".join(f"``{n}``" for n in names), ", ".join(types), what.strip()]
            rows.append(cells)
        missing = [c.name for c in table.columns if c.name not in described]
        unknown = sorted(n for n in described if n not in table.c)
        if in_progress:
            rows += [[f"``{n}``", str(table.c[n].type), "(being built)"] for n in missing]
        elif missing or unknown:
            raise self.error(
                f"{self.arguments[0]} ({table.name}): describe the columns {missing}"
                f" and remove {unknown}."
            )
        title = f"Table ``{table.name}``:"
        return [title, "", *_table(["Column", "Type", "What"], rows, "25 15 60")]


def setup(app: Sphinx) -> dict[str, t.Any]:
    app.add_directive("utm-config", ConfigTable)
    app.add_directive("utm-params", ParamsTable)
    app.add_directive("utm-channels", ChannelList)
    app.add_directive("utm-openapi", OpenAPI)
    app.add_directive("utm-columns", Columns)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
