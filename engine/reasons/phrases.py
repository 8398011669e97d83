"""Phrasings of every reason code, in English and Simplified Chinese.

Each table maps a phrase key to tiers of ``str.format`` templates, best tier first. A
template is used only when the evidence supplies every field it names (see
:mod:`streamrec.engine.reasons.templates` for the fields), so it can only say what the evidence
holds. The first usable template of the first usable tier is the canonical sentence.
The ``generic`` tier claims nothing and names nothing; it is the last resort against
repeating a sentence within one list.

Rules for new phrasings: no numbers, no titles or categories, no claims of popularity,
trending, newness or "bought/viewed together" beyond what the code's evidence states
(the guard checks the same keywords, and a test renders every template through it), and
in Chinese no numerals before a measure word (一件, 两个).
"""

from __future__ import annotations

from typing import Final

Tiers = tuple[tuple[str, ...], ...]

EN: Final[dict[str, Tiers]] = {
    "similar_to_recent": (
        (
            "Because you {cite}, and {habit}",
            "You {cite}, and {habit}",
            "Picked because you {cite}, and {habit}",
        ),
        (
            "Because you {cite}",
            "Recommended because you {cite}",
            "Picked for you since you {cite}",
            "You {cite}, so you may like this too",
            "Since you {cite}, here is a close match",
        ),
        (
            "Similar to {titles}, which you {verb}",
            "Close to {titles}, which you {verb}",
            "A close match for {titles}, which you {verb}",
        ),
        (
            "More like {titles}",
            "Similar to {titles}",
            "Related to {titles}",
            "In the same vein as {titles}",
        ),
    ),
    # The count holds purchases and add-to-carts
    # (streamrec.engine.serving.item_stats.BOUGHT_TYPES), so no
    # phrasing says "bought" alone.
    "bought_together": (
        (
            "Often bought or added to cart together with {partner}, which you {verb} "
            "({count} times)",
            "Bought or added to cart together with {partner} {count} times",
            "Bought or added to cart with {partner}: {count} times so far",
            "Shoppers bought or added to cart {partner} and this together {count} times",
            "Often bought or added to cart together with {partner} ({count} times)",
        ),
        (
            "Often bought or added to cart together with {partner}",
            "Frequently bought or added to cart with {partner}",
            "Pairs well with {partner}",
        ),
    ),
    "viewed_together": (
        (
            "Often viewed together with {partner}, which you {verb} ({count} times)",
            "Viewed together with {partner} {count} times",
            "People who viewed {partner} also viewed this, {count} times",
            "Often viewed together with {partner} ({count} times)",
        ),
        (
            "Often viewed together with {partner}",
            "Viewed alongside {partner}",
            "Often viewed with {partner}",
        ),
    ),
    "trending": (
        (
            "Trending: number {rank} right now, with {count} recent interactions "
            "(half-life {window})",
            "Trending right now at number {rank}: {count} recent interactions, half-life {window}",
            "Number {rank} in trending, with {count} recent interactions (half-life {window})",
            "Trending lately: {count} recent interactions, counted with a {window} half-life",
        ),
        ("Trending right now", "Trending lately", "Among the trending items now"),
    ),
    "category_affinity": (
        (
            "Because {count} of your last {of_recent} items were in {category}",
            "{count} of your last {of_recent} items were in {category}, so here is another",
            "You keep coming back to {category}: {count} of your last {of_recent} items",
            "Picked because {count} of your last {of_recent} items were in {category}",
        ),
        ("More from {category}", "Another pick from {category}", "Also in {category}"),
    ),
    "tag_affinity": (
        (
            "Because {count} of your last {of_recent} items were tagged {tag}",
            "Tagged {tag}, like {count} of your last {of_recent} items",
            "{count} of your last {of_recent} items were tagged {tag}, and so is this one",
            "Picked because {count} of your last {of_recent} items were tagged {tag}",
        ),
        ("Also tagged {tag}", "Another {tag} pick", "More tagged {tag}"),
    ),
    "new_arrival": (
        (
            "New in {category}, close to what you {cite}",
            "New arrival, close to what you {cite}",
            "Just arrived in {category}, close to what you {cite}",
            "Just arrived, close to what you {cite}",
            "A new {category} item, close to what you {cite}",
        ),
        (
            "New in {category}",
            "New arrival",
            "Just arrived in {category}",
            "Just arrived",
            "Newly added to {category}",
            "Newly added",
        ),
    ),
    "popular_new_user": (
        (
            "Popular with other users ({n} interactions) while we learn your taste",
            "Popular with other users ({n} interactions) while we get to know you",
            "A popular pick with other users ({n} interactions) to start with",
            "Other users interacted with this {n} times; we are still learning your taste",
        ),
        ("Popular with other users", "A popular pick to start with"),
    ),
    "popular": (
        (
            "Popular with other users ({n} interactions)",
            "A popular pick: {n} interactions from other users",
            "Other users interacted with this {n} times",
            "Often chosen by other users ({n} interactions)",
        ),
        ("Popular with other users", "A popular pick"),
    ),
    "generic": (
        (
            "Another pick for you",
            "One more idea for you",
            "Also worth a look",
            "Another suggestion for you",
            "Worth considering",
            "Something else to consider",
            "Another option for you",
            "One more to consider",
            "Here is another idea",
            "You might like this too",
            "Also picked for you",
            "Another idea to explore",
        ),
    ),
}

ZH: Final[dict[str, Tiers]] = {
    "similar_to_recent": (
        (
            "因为你{cite}，而且{habit}",
            "你{cite}，而且{habit}",
            "为你推荐：你{cite}，并且{habit}",
        ),
        (
            "因为你{cite}",
            "你{cite}，这件也许也适合你",
            "为你推荐，因为你{cite}",
            "看到你{cite}，为你挑选了这件",
            "由于你{cite}，为你推荐这件",
        ),
        (
            "与你{verb}的{titles}相似",
            "和你{verb}的{titles}很接近",
            "与你{verb}的{titles}相近",
        ),
        ("与{titles}相似", "类似{titles}", "与{titles}相近", "{titles}的相似之选"),
    ),
    "bought_together": (
        (
            "经常与你{verb}的{partner}一起购买或加购（{count}次）",
            "与{partner}一起购买或加购过{count}次",
            "顾客把{partner}和这件一起购买或加购（{count}次）",
            "常和{partner}一起买或加购：共{count}次",
            "经常与{partner}一起购买或加购（{count}次）",
        ),
        (
            "经常与{partner}一起购买或加购",
            "常与{partner}搭配购买或加购",
            "和{partner}经常一起买或加购",
        ),
    ),
    "viewed_together": (
        (
            "经常与你{verb}的{partner}一起浏览（{count}次）",
            "与{partner}一起浏览过{count}次",
            "浏览{partner}的用户也浏览了这件（{count}次）",
            "经常与{partner}一起浏览（{count}次）",
        ),
        ("经常与{partner}一起浏览", "常和{partner}同时浏览", "与{partner}一起被浏览"),
    ),
    "trending": (
        (
            "近期热门第{rank}名：最近{count}次互动（半衰期{window}）",
            "正在流行，热度排名第{rank}：最近{count}次互动（半衰期{window}）",
            "当下趋势第{rank}名，最近有{count}次互动（半衰期{window}）",
            "近期热度很高：最近{count}次互动（半衰期{window}）",
        ),
        ("近期热门", "正在流行", "当下趋势之选"),
    ),
    "category_affinity": (
        (
            "因为你最近的{of_recent}件商品中有{count}件属于「{category}」",
            "你最近的{of_recent}件商品里有{count}件是「{category}」类",
            "你常逛「{category}」：最近{of_recent}件中有{count}件",
            "为你推荐，因为你最近的{of_recent}件商品中有{count}件属于「{category}」",
        ),
        ("更多「{category}」商品", "来自「{category}」的推荐", "同属「{category}」类"),
    ),
    "tag_affinity": (
        (
            "因为你最近的{of_recent}件商品中有{count}件带有「{tag}」标签",
            "和你最近{of_recent}件商品中的{count}件一样，带有「{tag}」标签",
            "你最近的{of_recent}件商品里有{count}件带「{tag}」标签，这件也是",
        ),
        ("同样带有「{tag}」标签", "更多带「{tag}」标签的商品", "也带有「{tag}」标签"),
    ),
    "new_arrival": (
        (
            "「{category}」新品，因为你{cite}",
            "新品，因为你{cite}",
            "新到的「{category}」商品，因为你{cite}",
            "新上架，因为你{cite}",
            "「{category}」新品，与你{verb}的{titles}相近",
            "新品，与你{verb}的{titles}相近",
        ),
        (
            "「{category}」新品",
            "新品上架",
            "「{category}」新上架",
            "新到商品",
            "刚上架的「{category}」商品",
        ),
    ),
    "popular_new_user": (
        (
            "其他用户的热门之选（{n}次互动），我们正在了解你的喜好",
            "很受其他用户欢迎（{n}次互动），我们会逐步了解你的口味",
            "人气商品：其他用户共互动{n}次，我们正在了解你的喜好",
        ),
        ("很受其他用户欢迎", "先看看其他用户的热门之选"),
    ),
    "popular": (
        (
            "很受其他用户欢迎（{n}次互动）",
            "其他用户的热门之选（{n}次互动）",
            "人气商品：其他用户共互动{n}次",
            "其他用户常选的商品（{n}次互动）",
        ),
        ("很受其他用户欢迎", "人气之选"),
    ),
    "generic": (
        (
            "也值得一看",
            "不妨看看这件",
            "供你参考",
            "为你挑选",
            "或许你也会喜欢",
            "可以考虑这件",
            "也推荐给你",
            "还有这件可以看看",
            "给你的另外选择",
            "再为你挑选这件",
            "这件也值得考虑",
            "也许合你心意",
        ),
    ),
}

# Clause form ("viewed A and B"), relative form ("A, which you viewed"), per event type.
EN_VERBS: Final[dict[str, str]] = {
    "view": "viewed",
    "click": "clicked on",
    "add_to_cart": "added to your cart",
    "purchase": "bought",
}
EN_OTHER_VERB: Final = "interacted with"
ZH_CLAUSES: Final[dict[str, str]] = {
    "view": "浏览过{titles}",
    "click": "点击过{titles}",
    "add_to_cart": "把{titles}加入过购物车",
    "purchase": "购买过{titles}",
}
ZH_OTHER_CLAUSE: Final = "关注过{titles}"
ZH_VERBS: Final[dict[str, str]] = {
    "view": "浏览过",
    "click": "点击过",
    "add_to_cart": "加入过购物车",
    "purchase": "购买过",
}
ZH_OTHER_VERB: Final = "关注过"

# The trending half-life's unit: (singular, plural).
EN_UNITS: Final[dict[str, tuple[str, str]]] = {
    "day": ("day", "days"),
    "hour": ("hour", "hours"),
    "minute": ("minute", "minutes"),
    "second": ("second", "seconds"),
}
ZH_UNITS: Final[dict[str, tuple[str, str]]] = {
    "day": ("天", "天"),
    "hour": ("小时", "小时"),
    "minute": ("分钟", "分钟"),
    "second": ("秒", "秒"),
}

EN_HABITS: Final[dict[str, str]] = {
    "category_affinity": "{count} of your last {of_recent} items were in {category}",
    "tag_affinity": "{count} of your last {of_recent} items were tagged {tag}",
}
ZH_HABITS: Final[dict[str, str]] = {
    "category_affinity": "你最近的{of_recent}件商品中有{count}件属于「{category}」",
    "tag_affinity": "你最近的{of_recent}件商品中有{count}件带有「{tag}」标签",
}
