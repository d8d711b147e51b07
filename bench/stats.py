"""Round order and spread, shared by every comparison of the bench.

Sides of a comparison run in ABBA order (forward in even rounds, backward in
odd ones), so that a machine that slows down or speeds up during the bench
hits every side alike. A figure is the median over rounds, shown with its
min–max range, so that a goal met by noise shows as a range across it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass


def order(sides, round_: int) -> list:
    """The sides in this round's order: A B C, then C B A, then A B C ..."""
    sides = list(sides)
    return sides if round_ % 2 == 0 else sides[::-1]


@dataclass
class Spread:
    values: list

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    def text(self, spec: str = ".2f", unit: str = "") -> str:
        """'1.05 (0.98–1.12)': the median, then the range over rounds."""
        if len(self.values) == 1:
            return f"{self.median:{spec}}{unit} (1 round)"
        return f"{self.median:{spec}}{unit} ({self.low:{spec}}–{self.high:{spec}}{unit})"

    def rounds(self, spec: str = ".2f") -> str:
        return "/".join(f"{value:{spec}}" for value in self.values)


def ratios(numerators: list, denominators: list) -> Spread:
    """Round-by-round ratios: each round's two sides ran back to back."""
    return Spread([a / b for a, b in zip(numerators, denominators)])
