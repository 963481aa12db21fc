"""Guides written by hand from model-aware pieces: :class:`EasyGuide` and :func:`easy_guide`."""

from .easyguide import EasyGuide, easy_guide

__all__ = ["EasyGuide", "easy_guide"]
