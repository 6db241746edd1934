"""The feature step computed once per set of rows across the fits of a search.

Every trial of a tuning search fits the same pipeline on the same folds with other model
parameters. The feature step depends on the rows alone (never on the model's parameters), so
its fit and each of its transforms are the same for every trial: ``ReusedFeatures`` computes
them the first time and hands back the stored result afterwards (about a quarter of a trial's
time on the default cohort). The arrays are the very ones a fresh step computes, so results do
not change.

A memo belongs to one frame: rows are told apart by their index labels, so only frames with a
unique integer index use it (others are computed every time, as by ``ClinicalFeatures``).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from inflamrx.modeling.features import Array, ClinicalFeatures

# Stored matrices stop being added past this size (the memo lives as long as one search).
MEMO_BYTES = 512 * 2**20


class FeatureMemo:
    """Fitted states and transformed matrices of one frame, by rows; shared by the feature
    steps of every trial of one search."""

    def __init__(self) -> None:
        self.entries: dict[Hashable, Any] = {}
        self.bytes = 0

    def store(self, key: Hashable, value: Any, size: int) -> None:
        if self.bytes + size <= MEMO_BYTES:
            self.entries[key] = value
            self.bytes += size


def _rows(X: object) -> Hashable | None:
    """What identifies X's rows and columns within its frame, or None when it cannot."""
    if not isinstance(X, pd.DataFrame):
        return None
    index = X.index
    if not (pd.api.types.is_integer_dtype(index.dtype) and index.is_unique):
        return None
    return tuple(X.columns), np.asarray(index, dtype=np.int64).tobytes()


class ReusedFeatures(ClinicalFeatures):
    """``ClinicalFeatures`` whose fit and transforms are looked up in ``memo`` when the same
    rows were seen before (see the module docstring)."""

    def __init__(
        self,
        *,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        memo: FeatureMemo | None = None,
    ) -> None:
        super().__init__(include=include, exclude=exclude)
        self.memo = memo

    def _key(self, *parts: Hashable) -> Hashable:
        selection = (tuple(self.include or ()), self.include is None, tuple(self.exclude or ()))
        return (selection, *parts)

    def fit(self, X: Any, y: object = None) -> ReusedFeatures:
        rows = _rows(X)
        if self.memo is None or rows is None:
            self.fitted_rows_ = None
            super().fit(X, y)
            return self
        key = self._key("fit", rows)
        state = self.memo.entries.get(key)
        if state is None:
            super().fit(X, y)  # the fitted state depends on X alone (y is not read)
            state = {k: v for k, v in vars(self).items() if k.endswith("_") and k != "fitted_rows_"}
            self.memo.store(key, state, 0)
        self.__dict__.update(state)
        self.fitted_rows_ = rows
        return self

    def transform(self, X: Any) -> Array:
        rows = _rows(X)
        if self.memo is None or rows is None or self.fitted_rows_ is None:
            return super().transform(X)
        key = self._key("transform", self.fitted_rows_, rows)
        found: Array | None = self.memo.entries.get(key)
        if found is None:
            found = super().transform(X)
            found.setflags(write=False)  # shared by every later fit: nobody may change it
            self.memo.store(key, found, found.nbytes)
        return found
