"""Which canonical column a source column name most likely means ('IL-6' -> il6_pg_ml).

Only canonical names and data.columns mappings are read, so a column called `il6` is
ignored: the model would run without IL-6 while the site believes it was used. Validation
reports such near misses; the serving layer can name the closest canonical column when it
refuses an unknown one.
"""

from __future__ import annotations

import difflib
import re
from functools import cache, lru_cache

from inflamrx.data.schema import COLUMNS

# Tokens that qualify a measure rather than name it: units, assay, time point ('madrs_bl').
_QUALIFIERS = frozenset(
    {"mg", "dl", "l", "pg", "ml", "ng", "nmol", "kg", "m2", "10e9", "years", "yrs", "count",
     "total", "score", "hs", "bl", "baseline", "serum", "plasma"}
)  # fmt: skip
# Names in common use that no spelling rule reaches.
_ALIASES = {
    "il1beta": "il1b_pg_ml",
    "hdrs": "hamd17_total",
    "hrsd": "hamd17_total",
    "wcc": "wbc_10e9_l",
    "gender": "sex",
}


def _tokens(name: str) -> list[str]:
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", name).lower()  # 'hsCRP' -> 'hs crp'
    return [t for t in re.split(r"[^a-z0-9]+", spaced) if t]


def _key(name: str) -> str:
    """The name without case, separators and qualifiers: 'CRP (mg/dL)' -> 'crp'."""
    tokens = _tokens(name)
    return "".join(t for t in tokens if t not in _QUALIFIERS) or "".join(tokens)


@cache
def _keys() -> dict[str, str]:
    """Normalised name -> canonical column: each canonical name whole and without qualifiers."""
    keys = dict(_ALIASES)
    for name in COLUMNS:
        keys.setdefault("".join(_tokens(name)), name)
        keys.setdefault(_key(name), name)
    return keys


def _digits(key: str) -> str:
    return re.sub(r"\D", "", key)


@lru_cache(maxsize=4096)  # the same names arrive with every file and request
def closest_canonical(name: str) -> str | None:
    """The canonical column ``name`` most likely means, or None when it resembles none.

    Same name once case, separators and units are set aside ('CRP (mg/dL)'); else the start
    of one ('TNF', 'HAMD'); else a typo ('madrs_totl') with the same numbers, so that IL-8
    or IL-10 are not taken for IL-6 or IL-1beta.
    """
    key = _key(name)
    keys = _keys()
    if key in keys:
        return keys[key]
    if len(key) < 3:
        return None
    starts = sorted((k for k in keys if k.startswith(key)), key=lambda k: (len(k), k))
    if starts:
        return keys[starts[0]]
    close = difflib.get_close_matches(key, list(keys), n=5, cutoff=0.85)
    same_numbers = [k for k in close if _digits(k) == _digits(key)]
    return keys[same_numbers[0]] if same_numbers else None
