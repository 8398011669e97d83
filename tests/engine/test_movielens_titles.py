"""Specification of MovieLens display titles: the article in front, the year at the end."""

from __future__ import annotations

import pytest

from streamrec.engine.offline.datasets import (
    DatasetError,
    load_movielens_100k,
    movielens_100k_dir,
    movielens_title,
)


@pytest.mark.parametrize(
    ("title", "year", "shown"),
    [
        # the recbole copy: title and year in separate columns
        ("Right Stuff, The", "1983", "The Right Stuff (1983)"),
        ("Close Shave, A", "1995", "A Close Shave (1995)"),
        ("American President, An", "1995", "An American President (1995)"),
        ("Toy Story", "1995", "Toy Story (1995)"),
        # the MovieLens files: the year inside the title stays at the end
        ("Right Stuff, The (1983)", "", "The Right Stuff (1983)"),
        ("Right Stuff, The (1983)", "1983", "The Right Stuff (1983)"),
        # only the last ", The" is an article
        ("Good, The Bad and The Ugly, The", "1966", "The Good, The Bad and The Ugly (1966)"),
        # other languages, and alternative titles in parentheses
        ("Promesse, La", "1996", "La Promesse (1996)"),
        ("Visitors, The (Visiteurs, Les)", "1993", "The Visitors (Les Visiteurs) (1993)"),
        ("Star Maker, The (Uomo delle stelle, L')", "1995",
         "The Star Maker (L'Uomo delle stelle) (1995)"),
        ("Postino, Il", "1994", "Il Postino (1994)"),
        ("Promise, The (Versprechen, Das)", "1994", "The Promise (Das Versprechen) (1994)"),
        ("Blue Angel, The (Blaue Engel, Der)", "1930", "The Blue Angel (Der Blaue Engel) (1930)"),
        ("Tin Drum, The (Blechtrommel, Die)", "1979", "The Tin Drum (Die Blechtrommel) (1979)"),
        ("Hard, Die", "1988", "Die Hard (1988)"),
        ("Mariachi, El", "1992", "El Mariachi (1992)"),
        # commas that are not articles stay
        ("Paris, Texas", "1984", "Paris, Texas (1984)"),
        ("Mrs. Brown (Her Majesty, Mrs. Brown)", "1997",
         "Mrs. Brown (Her Majesty, Mrs. Brown) (1997)"),
        # no usable year: nothing appended
        ("unknown", "unknown", "unknown"),
        ("Land Before Time III: The Time of the Great Giving (1995)", "V",
         "Land Before Time III: The Time of the Great Giving (1995)"),
    ],
)  # fmt: skip
def test_trailing_article_moves_to_the_front_and_year_stays_last(
    title: str, year: str, shown: str
) -> None:
    assert movielens_title(title, year) == shown


def test_an_article_inside_a_word_is_not_an_article() -> None:
    assert movielens_title("Thelma & Louise", "1991") == "Thelma & Louise (1991)"
    assert movielens_title("Heat", "") == "Heat"


def _has_movielens() -> bool:
    try:
        movielens_100k_dir()
    except DatasetError:
        return False
    return True


@pytest.mark.skipif(not _has_movielens(), reason="MovieLens-100K comes with recbole")
def test_movielens_catalog_titles_have_no_trailing_article() -> None:
    titles = load_movielens_100k().catalog.set_index("item_id")["title"]
    assert titles["1"] == "Toy Story (1995)"
    articles = (", The", ", A", ", An", ", La", ", Le", ", Les", ", L'", ", Il", ", Der", ", Die")
    assert not [t for t in titles if t.split(" (")[0].endswith(articles)]
    assert "The Right Stuff (1983)" in set(titles)
