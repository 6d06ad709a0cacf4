"""Compression techniques: one module per technique, each a config dataclass plus a handler.

Users build configs and call :func:`edgekit.api.compress`; handlers are found through
:mod:`edgekit.compress.base`.
"""
