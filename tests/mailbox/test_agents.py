"""Agent registry pieces without a broker: keyword ranking, meaning ranking with a stand-in model."""

from __future__ import annotations

from mq9cluster.mailbox import agents


def test_keyword_ranking_prefers_rare_words_and_names():
    texts = [agents.card_text(card) for card in (
        {"name": "weather bot", "description": "forecasts"},
        {"name": "travel", "description": "books trips, checks weather"},
        {"name": "fx", "description": "currency exchange"},
    )]
    ranked = agents.rank_by_text("weather", texts)
    assert [i for i, _ in ranked] == [0, 1]
    assert agents.rank_by_text("currency trips", texts)[0][0] in (1, 2)
    assert agents.rank_by_text("", texts) == []


class Letters:
    """A stand-in embedder: unit vectors of letter counts."""

    def embed(self, texts):
        vectors = []
        for text in texts:
            counts = [text.count(c) for c in "abcdefghijklmnopqrstuvwxyz"]
            norm = sum(c * c for c in counts) ** 0.5 or 1
            vectors.append([c / norm for c in counts])
        return vectors


def test_meaning_ranking_orders_by_cosine_and_caches_card_vectors():
    cache: dict = {}
    ranked = agents.rank_by_meaning(Letters(), "zzz", ["abc", "zzzy", "zz"], cache)
    assert [i for i, _ in ranked][:1] == [2]
    assert set(cache) == {"abc", "zzzy", "zz"}


def test_bad_discover_and_register_bodies_are_error_texts():
    assert isinstance(agents.discover_request(b'{"page": 0}'), str)
    assert isinstance(agents.register_op(b'{"mailbox": "Bad"}', 0), str)
    assert agents.discover_request(b"").limit == agents.DEFAULT_LIMIT
