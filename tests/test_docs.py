"""The docs stay true to the code: every setting is documented, links and cited results
exist, and history (commit hashes) stays in git, not in the prose."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streamrec.stream.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS]
RESULTS = ROOT / "benchmarks" / "results"

#: 7 to 40 lowercase hex digits standing alone, with at least one letter and one digit (so
#: neither numbers nor words match), not part of a path, file name or hyphenated version
#: string such as a model version ``item2vec-20261124024552-ae40075c``.
COMMIT_HASH = re.compile(
    r"(?<![\w./-])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}(?![\w/-])"
)
URL = re.compile(r"https?://\S+")
#: A result file as the docs cite it: a stamped name such as ``e2e-20261124T040718Z.md``.
RESULT_FILE = re.compile(r"[\w.-]+-\d{8}(?:T\d{6}Z)?[\w-]*\.(?:md|json|png)")
RESULT_FOLDER = re.compile(r"benchmarks/results/([\w.-]+)/")


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def test_every_setting_is_in_the_configuration_table():
    missing = [
        f"STREAMREC_{name.upper()}"
        for name in Settings.model_fields
        if f"| `STREAMREC_{name.upper()}` |" not in CONFIGURATION
    ]
    assert missing == []


def test_the_readme_links_the_full_configuration_table():
    assert "(docs/configuration.md)" in README


def test_the_readme_names_the_two_quick_start_commands():
    assert "make demo" in README
    assert "make test" in README


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_every_linked_markdown_file_exists(page: Path):
    targets = re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", page.read_text())
    local = [t for t in targets if not t.startswith(("http://", "https://"))]
    missing = [t for t in local if not (page.parent / t).resolve().is_file()]
    assert missing == []


def test_the_readme_links_docs_that_exist():
    linked = re.findall(r"\]\((docs/[^)#\s]+\.md)", README)
    assert linked, "the README links no page of docs/"
    assert [link for link in linked if not (ROOT / link).is_file()] == []


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_no_commit_hashes_in_the_prose(page: Path):
    text = URL.sub("", page.read_text())
    found = [
        f"line {text.count(chr(10), 0, m.start()) + 1}: {m.group()}"
        for m in COMMIT_HASH.finditer(text)
    ]
    assert found == [], "history lives in git log, not in the docs"


@pytest.mark.parametrize(
    ("text", "is_hash"),
    [
        ("measured at 5069ed8 and", True),
        ("(`0a7fc2a`)", True),
        ("commit 182198cd887c2e380f643b1fb754dd4af9037651.", True),
        ("2592000 seconds", False),
        ("a defaced title", False),
        ("item2vec-20261124024552-ae40075c", False),
        ("e2e-20261124T011314Z-old-5069ed8.md", False),
    ],
)
def test_the_commit_hash_pattern(text: str, is_hash: bool):
    assert bool(COMMIT_HASH.search(text)) is is_hash


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_every_cited_benchmark_result_exists(page: Path):
    text = page.read_text()
    files = set(RESULT_FILE.findall(text))
    folders = set(RESULT_FOLDER.findall(text))
    missing = sorted(f for f in files if not (RESULTS / f).is_file())
    missing += sorted(f"{d}/" for d in folders if not (RESULTS / d).is_dir())
    assert missing == []
