"""Per-coin sentiment of news headlines, extracted by an LLM (see `extractor`) and evaluated (`evaluation`)."""

from cryptopredict.sentiment.extractor import (
    AGENT_NAME,
    PROMPT_VERSION,
    CoinSentiment,
    HeadlineSentiment,
    SentimentOutputInvalid,
    build_agent,
    is_transient,
    normalize_ticker,
    score_headline,
    to_scores,
)

__all__ = [
    "AGENT_NAME",
    "PROMPT_VERSION",
    "CoinSentiment",
    "HeadlineSentiment",
    "SentimentOutputInvalid",
    "build_agent",
    "is_transient",
    "normalize_ticker",
    "score_headline",
    "to_scores",
]
