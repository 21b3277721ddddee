"""Recommendations over an index generation: "for you", "more like this", trending (DESIGN decision 7).

Modules: `profile` (user profile vectors and seeds), `candidates` (catalog arrays, co-engagement and
popularity model, candidate helpers), `ranking` (blend, MMR, reasons), `recommender` (the `Recommender`).
"""

from rag.recommend.recommender import Recommendation, RecommendationList, Recommender

__all__ = ["Recommender", "Recommendation", "RecommendationList"]
