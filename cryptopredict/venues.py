"""The one place that maps each venue's symbols to the project's pair names and back.

The project names a pair `BASE/QUOTE` in upper case (`BTC/USD`, `BTC/USDT`) on every venue; which venue
it trades on is the record's `exchange` (topics.market_key). Kraken's WebSocket v2 symbols are already
such names; Coinbase's product ids join the two with a dash (`BTC-USD`); Binance's symbols join them
with nothing (`BTCUSDT`, lower case in stream names), so its quote is found among the known quotes.
"""

from __future__ import annotations

import re

from cryptopredict.topics import KRAKEN, PAIR_PATTERN, split_namespace

# Longest first, so BTCFDUSD is FDUSD-quoted, not USD-quoted.
BINANCE_QUOTES = ("FDUSD", "USDT", "USDC", "TUSD", "BUSD", "EUR", "GBP", "TRY", "BTC", "ETH", "BNB")

_VENUE_PAIR = re.compile(PAIR_PATTERN)


class UnknownSymbol(ValueError):
    """A venue symbol that names no pair the project knows how to read."""


def venue_symbol(exchange: str, pair: str) -> str:
    """The venue's symbol of a project pair (a namespace, if any, is not the venue's business)."""
    _, pair = split_namespace(pair)
    if not _VENUE_PAIR.fullmatch(pair):
        raise UnknownSymbol(f"{pair!r} is not a pair like BTC/USD")
    base, quote = pair.split("/")
    if exchange == KRAKEN:
        return pair
    if exchange == "coinbase":
        return f"{base}-{quote}"
    if exchange == "binance":
        return f"{base}{quote}"
    raise UnknownSymbol(f"unknown exchange {exchange!r}")


def project_pair(exchange: str, symbol: str) -> str:
    """The project's pair of a venue symbol: `BTC-USD` (Coinbase) or `btcusdt` (Binance) -> `BTC/USD`, `BTC/USDT`."""
    if exchange == KRAKEN:
        pair = symbol
    elif exchange == "coinbase":
        base, dash, quote = symbol.partition("-")
        pair = f"{base}/{quote}" if dash else ""
    elif exchange == "binance":
        upper = symbol.upper()
        quote = next((q for q in BINANCE_QUOTES if upper.endswith(q) and len(upper) > len(q)), "")
        pair = f"{upper[: -len(quote)]}/{quote}" if quote else ""
    else:
        raise UnknownSymbol(f"unknown exchange {exchange!r}")
    if not _VENUE_PAIR.fullmatch(pair):
        raise UnknownSymbol(f"{exchange} symbol {symbol!r} names no pair like BTC/USD")
    return pair


def base_asset(pair: str) -> str:
    """The coin a pair prices (`BTC` of `coinbase:BTC/USD`): what cross-venue features match on."""
    return split_namespace(pair.rpartition(":")[2])[1].split("/")[0]
