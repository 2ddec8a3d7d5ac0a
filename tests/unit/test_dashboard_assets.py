"""The dashboard's static files: shipped with the package, self-contained (no CDN, no build
step), and using only the data-testid hooks and API paths that exist."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "services" / "query" / "static"
FILES = sorted(p for p in STATIC.iterdir() if p.is_file())


def test_every_static_file_ships_with_the_package():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["services.query"]
    for path in FILES:
        relative = path.relative_to(ROOT / "services" / "query").as_posix()
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), relative


def test_the_page_loads_nothing_from_elsewhere():
    assert {p.name for p in FILES} >= {"index.html", "dashboard.css", "dashboard.js", "charts.js"}
    for path in FILES:
        text = path.read_text()
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), path.name
        assert "@import" not in text and "cdn" not in text.lower(), path.name
    for path in STATIC.glob("*.js"):
        for module in re.findall(r"""from\s+["']([^"']+)["']""", path.read_text()):
            assert module.startswith("./") and (STATIC / module[2:]).is_file(), module


def test_no_inline_script_or_style_so_the_content_security_policy_holds():
    html = (STATIC / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert "<style" not in html and " style=" not in html
    for path in STATIC.glob("*.js"):
        assert " style=" not in path.read_text(), path.name
