"""The documentation: the README stays a front door, docs/ is one site whose every page is in its
nav, links between the files hold, and the settings' defaults shown come from the settings themselves.

The site itself is built by ``.ci/run`` (``mkdocs build --strict``, which needs the ``docs`` extra);
these checks need nothing beyond the package, so that a broken link fails the suite too.
"""
from __future__ import annotations

import re
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SITE = runpy.run_path(str(DOCS / "hooks" / "site.py"), run_name="site_under_test")
README = (ROOT / "README.md").read_text(encoding="utf-8")
#: The settings' module, as the site's hook imports it (one import line to change if it moves).
Settings, env_name, setting_names = (getattr(SITE["settings_source"], n) for n in ("Settings", "env_name", "setting_names"))
LINK = re.compile(r"\[[^\]]+\]\(((?!https?:|mailto:|#)[^)\s#]+)(#[^)\s]*)?\)")


def pages() -> list[Path]:
    return sorted(p for p in DOCS.glob("**/*.md"))


def test_the_readme_is_a_front_door_with_the_two_commands_in_their_words() -> None:
    assert len(README.splitlines()) < 400
    assert '```bash\npip install -e ".[hub]" && python run_node.py --demo\n```' in README
    assert '```bash\npip install -e ".[test]" && python -m pytest\n```' in README
    for section in ("Embedding in a script", "A module of handlers is a node: `--app`", "Testing your handlers",
                    "Settings you will use most", "Documentation", "中文快速开始"):
        assert f"\n## {section}\n" in README, section


def test_every_page_of_docs_is_in_the_nav_and_every_nav_entry_exists() -> None:
    nav_section = (ROOT / "mkdocs.yml").read_text(encoding="utf-8").split("\nnav:\n", 1)[1]
    nav = re.findall(r"^\s+- (?:[^:\n]+: )?(\S+\.md)$", nav_section, re.MULTILINE)
    assert len(nav) == len(set(nav))
    # index.md is the README, added by the build (docs/hooks/site.py).
    assert sorted(nav) == sorted(["index.md"] + [p.relative_to(DOCS).as_posix() for p in pages()])


def test_relative_links_of_the_readme_and_the_docs_point_at_files_that_exist() -> None:
    broken = []
    for path in [ROOT / "README.md", *pages()]:
        text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
        for target, _ in LINK.findall(text):
            if not (path.parent / target).exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert broken == []


def test_the_settings_reference_has_every_setting_with_its_flag_and_default() -> None:
    assert SITE["SETTINGS_MARKER"] in (DOCS / "configuration.md").read_text(encoding="utf-8")
    sections = SITE["settings_reference"]().split("### ")[1:]
    assert [re.match(r"`(OCTOHUB_\w+)`", s).group(1) for s in sections] == [env_name(n) for n in setting_names()]
    defaults = Settings()
    for name, section in zip(setting_names(), sections):
        assert f"flag: `--{name.replace('_', '-')}`" in section, section
        assert f"Default: {SITE['default_text'](getattr(defaults, name))};" in section, section


def test_the_readmes_settings_table_names_real_settings_with_their_defaults() -> None:
    section = README.split("\n## Settings you will use most\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(OCTOHUB_\w+)` \| (.+?) \|", section, re.MULTILINE)
    assert len(rows) >= 10
    by_env = {env_name(n): n for n in setting_names()}
    defaults = Settings()
    for variable, default in rows:
        assert variable in by_env, variable
        assert default == SITE["default_text"](getattr(defaults, by_env[variable])), variable


def test_links_become_the_sites_own_or_name_the_file() -> None:
    site_links = SITE["site_links"]
    readme = "[a](docs/limits.md#rate) [b](examples/tasks.py) [`examples/x.xml`](examples/x.xml) [c](#here) [d](https://e.org)"
    assert site_links(readme, "", "") == (
        "[a](limits.md#rate) b (`examples/tasks.py` in the repository) `examples/x.xml` [c](#here) [d](https://e.org)")
    page = "[a](../README.md#testing-your-handlers) [b](protocol.md#8) [c](../examples/systemd/x.service)"
    assert site_links(page, "docs", "") == (
        "[a](index.md#testing-your-handlers) [b](protocol.md#8) c (`examples/systemd/x.service` in the repository)")


def test_a_guide_named_for_a_setting_must_be_a_setting() -> None:
    guides = dict(SITE["GUIDES"])
    try:
        SITE["GUIDES"]["no_such_setting"] = "limits.md"
        try:
            SITE["settings_reference"]()
        except ValueError as exc:
            assert "no_such_setting" in str(exc)
        else:
            raise AssertionError("an unknown setting in GUIDES was accepted")
    finally:
        SITE["GUIDES"].clear()
        SITE["GUIDES"].update(guides)
