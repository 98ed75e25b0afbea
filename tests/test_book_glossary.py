"""The glossary page: its terms are defined once, each links to a chapter that exists, and every
``{term}`` role in the book names one of them (issue 17, part 6)."""

from __future__ import annotations

import re
from pathlib import Path

BOOK = Path(__file__).resolve().parents[1] / "book"
GLOSSARY = BOOK / "glossary.md"
TERM_ROLE = re.compile(r"\{term\}`([^`]*)`")
DOC_ROLE = re.compile(r"\{doc\}`([^`<]*<)?([^`>]+)>?`")


def glossary_entries() -> dict[str, str]:
    """Term -> definition, read from the ``{glossary}`` directive."""
    text = GLOSSARY.read_text(encoding="utf-8")
    body = text.split("```{glossary}", 1)[1].split("\n```", 1)[0]
    entries: dict[str, str] = {}
    term = None
    for line in body.splitlines():
        if not line.strip() or line.startswith(":"):
            continue
        if not line.startswith(" "):
            term = line.strip()
            assert term not in entries, f"{term!r} is defined twice"
            entries[term] = ""
        else:
            assert term is not None, f"definition without a term: {line!r}"
            entries[term] += " " + line.strip()
    return entries


def test_the_glossary_defines_40_to_70_terms_each_linked_to_an_existing_chapter():
    entries = glossary_entries()
    assert 40 <= len(entries) <= 70, len(entries)
    for term, definition in entries.items():
        assert definition.strip(), f"{term!r} has no definition"
        for _, target in DOC_ROLE.findall(definition):
            page = BOOK / f"{target.strip()}.md"
            assert page.exists(), f"{term!r} links to a missing page {target}"


def test_every_term_role_in_the_book_names_a_glossary_term():
    terms = {t.lower() for t in glossary_entries()}
    for md in sorted(BOOK.glob("*.md")):
        for role in TERM_ROLE.findall(md.read_text(encoding="utf-8")):
            target = role.split("<")[-1].rstrip(">").strip() if "<" in role else role.strip()
            assert target.lower() in terms, f"{md.name}: {{term}}`{role}` is not in the glossary"


def test_the_glossary_is_the_last_page_of_the_book():
    toc = (BOOK.parent / "_toc.yml").read_text(encoding="utf-8").strip().splitlines()
    assert toc[-1].strip() == "- file: book/glossary"
