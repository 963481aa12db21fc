"""Test helpers at Pyro's path ``pyro.distributions.testing``."""
