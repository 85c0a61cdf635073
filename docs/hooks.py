"""mkdocs hook: the repository files the guides link to (the example scripts, the benchmark figures) are served with
the site from where they live, so that docs/ holds no copies that could drift from them. The guides link to them
as GitHub resolves it (`docs/guides/` → `../../examples/`); on the site those files sit beside docs/'s own, one
level up, so the links are rewritten to match."""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
SHARED = ("examples/*.sh", "examples/*.py", "benchmarks/figures/*.png")


def on_files(files, config):
    for pattern in SHARED:
        for path in sorted(ROOT.glob(pattern)):
            files.append(File(path.relative_to(ROOT).as_posix(), str(ROOT), config["site_dir"],
                              config["use_directory_urls"]))
    return files


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri.startswith("guides/"):
        for folder in ("examples", "benchmarks"):
            markdown = markdown.replace(f"](../../{folder}/", f"](../{folder}/")
    return markdown
