"""The image pass's per-image results as columns: what the audit's driver keeps in memory.

:func:`collect_records` unpacks the stream of worker records into :class:`PassColumns`:
``int64`` arrays for sizes and EXIF data, and one column per key a check's ``compute``
returned: a pandas nullable array (``Int64`` or ``Float64``: numpy values plus a
missing-value mask, 9 bytes per image) for numbers, else a list.
:class:`vetset.plugins.audit.context.AuditContext` extends :class:`PassColumns` with the
samples' ids, labels and splits and the checks' writes.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from vetset.core.errors import PluginError

#: Integers above this lose precision as float64 (2**53, IEEE 754 double's 53-bit significand).
_EXACT_FLOAT_INT = 2**53
_INT64 = (-(2**63), 2**63 - 1)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _put(buf: list[np.ndarray], i: int, value: Any) -> bool:
    """Store number ``value`` at ``i`` of a numeric column being filled (``[values, present]``).

    An ``int64`` column turns ``float64`` when a float arrives, if its integers stay exact
    (at most 2**53). Returns ``False`` when ``value`` cannot join without rounding or
    overflow (the column then becomes a list of the exact values).
    """
    values, present = buf
    is_int = isinstance(value, (int, np.integer))
    if values.dtype == np.int64:
        if is_int:
            if not _INT64[0] <= int(value) <= _INT64[1]:
                return False
        else:
            if present.any() and int(np.abs(values[present]).max()) > _EXACT_FLOAT_INT:
                return False
            buf[0] = values = values.astype(np.float64)
    elif is_int and abs(int(value)) > _EXACT_FLOAT_INT:
        return False
    values[i] = value
    present[i] = True
    return True


def _nullable(values: np.ndarray, present: np.ndarray) -> Any:
    """``values`` with ``present`` as a pandas nullable array (no copy): ``Int64`` or ``Float64``."""
    cls = pd.arrays.IntegerArray if values.dtype == np.int64 else pd.arrays.FloatingArray
    return cls(values, ~present)


class _ComputedBuilder:
    """Fills ``{key: column}`` for one check as records arrive (see :func:`collect_records`).

    A key whose values are numbers is kept as a numpy ``(values, present)`` pair while it
    fills (``int64`` while every value is an integer, then ``float64``) and handed out as a
    pandas nullable array (:meth:`columns`); any other key, or one that mixes numbers with
    other types or holds integers that float64 or int64 cannot carry exactly, a list. A
    key's repeated strings (a colour mode, a bin name) are shared, so each is one object
    however many images carry it; a key with more than :attr:`MAX_SHARED` distinct strings
    (a hash) stops sharing, since each value is unique.
    """

    MAX_SHARED = 256

    def __init__(self, n: int):
        self.n = n
        self.cols: dict[str, Any] = {}  # key -> list of values, or [values, present] for numbers
        self.numeric: set[str] = set()  # keys whose column is [values, present]
        self.shared: dict[str, dict[str, str] | None] = {}

    def set(self, i: int, key: str, value: Any) -> None:
        col = self.cols.get(key)
        if col is None:
            if _is_number(value):
                col = [np.zeros(self.n, dtype=np.int64 if isinstance(value, (int, np.integer)) else np.float64),
                       np.zeros(self.n, dtype=bool)]
                self.numeric.add(key)
            else:
                col = [None] * self.n
            self.cols[key] = col
        if value is None:
            return
        if key in self.numeric:
            # the common cases first, without the checks (10 values per image on CIFAR make
            # this the driver's main cost): a Python float into a float column, a Python int
            # within 2**53 into either
            kind = type(value)
            values = col[0]
            if kind is float and values.dtype == np.float64 or \
                    kind is int and -_EXACT_FLOAT_INT <= value <= _EXACT_FLOAT_INT and values.dtype == np.int64:
                values[i] = value
                col[1][i] = True
                return
            if _is_number(value) and _put(col, i, value):
                return
            col = self.cols[key] = [v if p else None for v, p in zip(col[0].tolist(), col[1].tolist())]
            self.numeric.discard(key)
        elif type(value) is str:
            shared = self.shared.get(key, {})
            if shared is not None:
                value = shared.setdefault(value, value)
                self.shared[key] = shared if len(shared) <= self.MAX_SHARED else None
        col[i] = value

    def columns(self) -> dict[str, Any]:
        """``{key: column}``: pandas nullable arrays for numbers, lists otherwise."""
        return {key: _nullable(*col) if key in self.numeric else col for key, col in self.cols.items()}


@dataclass
class PassColumns:
    """The image pass's records as columns, one entry per audited image (see :func:`collect_records`).

    Attributes:
        readable: ``bool`` array, shape ``(n,)``: the file decoded.
        width, height: ``int64`` arrays, pixels after EXIF orientation (0 if unreadable).
        file_size: ``int64`` array, bytes.
        exif_orientation, n_frames: ``int64`` arrays (1 when absent).
        mode, format: Pillow mode / format names per sample (``""`` if unreadable).
        error: decode failure reason per sample (``None`` when readable).
        computed: ``{check: {key: column}}``, what each check's ``compute`` returned per
            image, a sequence of length ``n``: for numbers a pandas nullable array
            (``Int64``/``Float64``; ``pd.NA`` for unreadable images or when ``compute``
            failed; ``ctx.column`` reads it as numpy), else a list (``None`` there).
        failures: ``{check: ["<filepath>: <error>", ...]}``, images whose ``compute`` raised.
    """

    readable: np.ndarray
    width: np.ndarray
    height: np.ndarray
    file_size: np.ndarray
    exif_orientation: np.ndarray
    n_frames: np.ndarray
    mode: list[str]
    format: list[str]
    error: list[str | None]
    computed: dict[str, dict[str, Sequence[Any]]]
    failures: dict[str, list[str]]


def collect_records(records: Iterable[tuple], filepaths: Sequence[str], checks: Sequence[str]) -> PassColumns:
    """Turn the stream of image-pass records into columns as they arrive.

    Each record (``vetset.plugins.audit.stage.audit_image``: ``(width, height, file_size,
    mode, format, exif_orientation, n_frames, error, results)``, one ``results`` dict per
    check in ``checks`` order) is unpacked into preallocated ``int64`` arrays and one
    column per computed key (a pandas nullable array for numbers), then dropped: the
    driver keeps about 9 bytes per number instead of a tuple, a dict and a float object
    per image (``benchmarks/audit_scaling.py`` measures the driver's memory).

    Args:
        records: the records in the order of ``filepaths`` (a generator is consumed once).
        filepaths: the audited files (length ``n``), for failure messages.
        checks: names of the checks whose ``compute`` produced ``results``, in order.

    Raises:
        PluginError: the stream has more or fewer records than ``filepaths``.
    """
    n = len(filepaths)
    ints = np.zeros((5, n), dtype=np.int64)  # width, height, file_size, exif_orientation, n_frames
    mode: list[str] = [""] * n
    fmt: list[str] = [""] * n
    error: list[str | None] = [None] * n
    builders = {name: _ComputedBuilder(n) for name in checks}
    failures: dict[str, list[str]] = {}
    intern = sys.intern
    i = -1
    for i, (w, h, size, m, f, orient, frames, err, results) in enumerate(records):
        if i >= n:
            raise PluginError(f"the image pass returned more than {n} records")
        ints[:, i] = (w, h, size, orient, frames)
        mode[i], fmt[i], error[i] = intern(m), intern(f), err
        for name, res in zip(checks, results):
            if "__error__" in res:
                failures.setdefault(name, []).append(f"{filepaths[i]}: {res['__error__']}")
                continue
            setter = builders[name].set
            for key, value in res.items():
                setter(i, key, value)
    if i + 1 != n:
        raise PluginError(f"the image pass returned {i + 1} records for {n} images")
    return PassColumns(readable=np.array([e is None for e in error], dtype=bool), width=ints[0], height=ints[1],
                       file_size=ints[2], exif_orientation=ints[3], n_frames=ints[4], mode=mode, format=fmt,
                       error=error, computed={name: b.columns() for name, b in builders.items()}, failures=failures)


__all__ = ["PassColumns", "collect_records"]
