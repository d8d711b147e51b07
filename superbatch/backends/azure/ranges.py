"""Sets of task indices as sorted [first, last] ranges, so that the journal of a
20,000-task run says "added 0-19999" in a few bytes, not 20,000 numbers."""


def from_sorted(indices: list) -> list:
    ranges = []
    for index in indices:
        if ranges and index == ranges[-1][1] + 1:
            ranges[-1][1] = index
        else:
            ranges.append([index, index])
    return ranges


def add_range(ranges: list, first: int, last: int) -> list:
    merged = []
    for low, high in sorted([*map(list, ranges), [first, last]]):
        if merged and low <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], high)
        else:
            merged.append([low, high])
    return merged


def contains(ranges: list, index: int) -> bool:
    return any(low <= index <= high for low, high in ranges)


def expand(ranges: list) -> list:
    """Every index the ranges hold, in order."""
    return [index for low, high in ranges for index in range(low, high + 1)]
