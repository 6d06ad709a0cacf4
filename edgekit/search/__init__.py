"""Search: the fastest faithful variant for a target, found by building and measuring candidates."""

from edgekit.search.run import SearchResult, search

__all__ = ["SearchResult", "search"]
