"""Unstructured magnitude pruning of the *remaining* weights (Frankle & Carbin 2019, §2): |w| of the trained
network."""

from lth.methods.base import Method


class Magnitude(Method):
    name = "magnitude"
    order = 0

    def scores(self, scoring, params):
        return {n: scoring.trained[n].abs() for n in scoring.masks}
