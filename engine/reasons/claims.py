"""Keywords that make a claim, per reason code and language, for the faithfulness guard.

A sentence that uses a claim's keyword is faithful only when the reason's code (or its
secondary ``also`` code) is one of the claim's ``allowed`` codes: "popular" needs a
``popular`` or ``trending`` reason, "trending" / "right now" a ``trending`` one, "new" a
``new_arrival``, "bought together" a ``bought_together`` and "viewed together" a
``viewed_together`` reason. Event words ("bought", "浏览过") need a cited item with that
event, except inside an allowed claim's own wording ("frequently bought with").
Keywords are matched case-insensitively, English ones as whole words, after the
evidence's own titles, categories and tags have been masked out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from streamrec.engine.reasons._types import Language


@dataclass(frozen=True)
class Claim:
    """Keywords whose use is true only under some reason codes."""

    name: str
    allowed: frozenset[str]
    keywords: Mapping[Language, tuple[str, ...]]

    @property
    def all_keywords(self) -> tuple[str, ...]:
        return tuple(k for words in self.keywords.values() for k in words)


CLAIMS: Final[tuple[Claim, ...]] = (
    Claim(
        "popularity",
        frozenset({"popular", "trending"}),
        {
            "en": ("popular", "popularity", "bestseller", "best seller",
                   "best-selling", "best selling", "top seller", "top-rated", "top rated",
                   "most viewed", "most-viewed", "other users", "other shoppers",
                   "other customers", "everyone", "many people", "many users",
                   "crowd favorite", "fan favorite"),
            "zh": ("热门", "人气", "受欢迎", "畅销", "热销", "爆款", "其他用户", "大家",
                   "很多人"),
        },
    ),
    Claim(
        "trending",
        frozenset({"trending"}),
        {
            "en": ("trending", "trend", "trends", "right now", "lately", "hot right now"),
            "zh": ("趋势", "流行", "近期", "当下", "热度", "最近很火"),
        },
    ),
    Claim(
        "newness",
        frozenset({"new_arrival"}),
        {
            "en": ("new", "newly", "just arrived", "just in", "latest", "brand-new",
                   "recently added"),
            "zh": ("新品", "上新", "新到", "新上架", "刚上架", "刚到", "最新", "新款"),
        },
    ),
    Claim(
        "bought_together",
        frozenset({"bought_together"}),
        {
            "en": ("bought together", "frequently bought", "also bought", "customers who",
                   "people who bought", "shoppers who", "who bought", "bought with",
                   "goes well with", "pairs well", "complements", "bought or added to cart",
                   "shoppers bought"),
            "zh": ("一起购买", "一起买", "经常一起", "也买了", "还买了", "搭配",
                   "一起购买或加购", "一起买或加购", "搭配购买或加购"),
        },
    ),
    Claim(
        "viewed_together",
        frozenset({"viewed_together"}),
        {
            "en": ("viewed together", "viewed with", "viewed alongside", "also viewed",
                   "who viewed", "looked at together"),
            "zh": ("一起浏览", "同时浏览", "也浏览了", "也看了", "一起看"),
        },
    ),
    Claim(
        "similarity",
        frozenset({"similar_to_recent", "new_arrival"}),
        {
            "en": ("similar", "close to", "close match", "more like", "related to", "same vein"),
            "zh": ("相似", "相近", "类似", "接近"),
        },
    ),
    Claim(
        "habit",
        frozenset({"category_affinity", "tag_affinity"}),
        {
            "en": ("of your last", "of your recent", "keep coming back", "tagged"),
            "zh": ("件中有", "件商品中有", "件商品里有", "常逛", "标签"),
        },
    ),
    Claim(
        "preference",
        frozenset(),
        {
            "en": ("you liked", "you loved", "you enjoyed", "your favorite", "your favourite"),
            "zh": ("你喜欢的", "你最爱", "你钟爱"),
        },
    ),
)  # fmt: skip

EVENT_CLAIMS: Final[dict[str, dict[Language, tuple[str, ...]]]] = {
    "view": {
        "en": ("viewed", "looked at", "watched", "browsed"),
        "zh": ("浏览过", "浏览了", "看过", "看了"),
    },
    "click": {"en": ("clicked",), "zh": ("点击过", "点击了", "点过")},
    "add_to_cart": {"en": ("your cart", "basket"), "zh": ("购物车", "加购")},
    "purchase": {
        "en": ("bought", "purchased", "ordered", "your purchase"),
        "zh": ("购买过", "购买了", "买过", "买了"),
    },
}
