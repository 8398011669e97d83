"""The engine's parameter objects, built from the one settings object."""

from __future__ import annotations

from streamrec.engine.reasons import ReasonParams
from streamrec.engine.serving.item_stats import TrendParams
from streamrec.engine.serving.recommender import RankingParams
from streamrec.stream.settings import Settings


def ranking_params(settings: Settings) -> RankingParams:
    """What the recommender needs from the settings: list size, filters and reasons."""
    return RankingParams(
        k=settings.num_recommendations,
        fan_out=settings.candidate_fan_out,
        exclude_seen=settings.exclude_seen,
        near_duplicate_cosine=settings.near_duplicate_cosine,
        diversity_weight=settings.diversity_weight,
        max_impressions=settings.max_impressions,
        reasons=ReasonParams(
            min_similarity=settings.reason_min_similarity,
            min_together_count=settings.cooccurrence_min_count,
            session_window=settings.cooccurrence_window,
        ),
        reason_language=settings.reason_language,
    )


def trend_params(settings: Settings) -> TrendParams:
    """The trending statistics' decay and cut-offs."""
    return TrendParams(
        half_life_s=settings.trend_half_life_s,
        top_n=settings.trend_top_n,
        min_count=settings.trend_min_count,
    )
