"""The HTML page: jinja2 templates (package data under templates/, autoescaping on, undefined names an error) filled
with the views, one self-contained file written atomically."""

from __future__ import annotations

import datetime
from pathlib import Path

import jinja2

import gentool
from gentool.fileio import atomic_write_bytes
from gentool.report.views import RUN_SECTIONS, data_uri, fmt


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("gentool.report", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(data_uri=data_uri, fmt=fmt)
    return env


def render_page(kind: str, view: dict) -> str:
    """The page for a 'run', 'sweep' or 'folder' view."""
    template = environment().get_template(f"{kind}.html.j2")
    made = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return template.render(view=view, run_sections=RUN_SECTIONS, version=gentool.__version__, made=made)


def write_page(path: Path, html: bytes) -> None:
    atomic_write_bytes(path, html)
