"""News ingestion: pull headlines from CryptoPanic and RSS/Atom feeds and normalise them to NewsItem.

Everything here is plain client code with no Temporal or Kafka in it, so the activity that polls the
sources stays a thin adapter and the parsing can be tested without services
(`cryptopredict.simulators.news` is a local stand-in for the real sites).
"""

from cryptopredict.news.sources import (
    DEFAULT_RSS_FEEDS,
    ConditionalCache,
    CryptoPanicSource,
    FetchPolicy,
    FetchResult,
    NewsSource,
    NewsSourceError,
    RssSource,
    canonical_url,
    clean_text,
    parse_cryptopanic,
    parse_feed,
    parse_retry_after,
    stable_id,
)

__all__ = [
    "DEFAULT_RSS_FEEDS",
    "ConditionalCache",
    "CryptoPanicSource",
    "FetchPolicy",
    "FetchResult",
    "NewsSource",
    "NewsSourceError",
    "RssSource",
    "canonical_url",
    "clean_text",
    "parse_cryptopanic",
    "parse_feed",
    "parse_retry_after",
    "stable_id",
]
