"""Pyro's ``contrib`` modules that vitorch provides.

Only :mod:`vitorch.contrib.easyguide` (``EasyGuide``, ``easy_guide``) for now.
"""
