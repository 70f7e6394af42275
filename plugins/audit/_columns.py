"""The image pass's per-image results as columns: what the audit's driver keeps in memory.

:func:`collect_records` unpacks the stream of worker records into :class:`PassColumns`:
``int64`` arrays for sizes and EXIF data, and one column per key a check's ``compute``
returned, a :class:`NumericColumn` (numpy values plus a presence mask, 9 bytes per image)
for numbers, else a list. :class:`vetset.plugins.audit.context.AuditContext` extends
:class:`PassColumns` with the samples' ids, labels and splits and the checks' writes.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vetset.core.errors import PluginError


class NumericColumn(Sequence):
    """One computed key's numbers for every image, as a numpy array plus a presence mask.

    It reads like the list it replaces: ``col[i]`` is a Python ``int``/``float`` or
    ``None`` where the image gave no value (unreadable, or its ``compute`` failed), and
    iteration yields the same. It costs 9 bytes per image instead of a 32-byte float
    object and a list slot. :meth:`AuditContext.column` reads it without a Python loop.

    Attributes:
        values: ``int64`` or ``float64`` array, shape ``(n,)`` (0 where missing).
        present: ``bool`` array, shape ``(n,)``.
    """

    __slots__ = ("values", "present")

    def __init__(self, values: np.ndarray, present: np.ndarray):
        self.values = values
        self.present = present

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [v if p else None for v, p in zip(self.values[i].tolist(), self.present[i].tolist())]
        return self.values[i].item() if self.present[i] else None

    def __iter__(self) -> Iterator[Any]:
        return (v if p else None for v, p in zip(self.values.tolist(), self.present.tolist()))

    def __setitem__(self, i: Any, value: Any) -> None:
        if isinstance(i, slice):
            idx = range(*i.indices(len(self)))
            value = list(value)
            if len(value) != len(idx):
                raise ValueError(f"cannot assign {len(value)} values to a slice of {len(idx)}")
            for k, v in zip(idx, value):
                self[k] = v
            return
        if value is None:
            self.present[i] = False
            self.values[i] = 0
            return
        if not _is_number(value):
            raise TypeError(f"a NumericColumn holds numbers or None, not {type(value).__name__}")
        if not _exact_in(self, value):
            raise ValueError(f"{value!r} cannot join this {self.values.dtype} column without rounding "
                             "(integers above 2**53 and floats do not mix in one column)")
        if self.values.dtype == np.int64 and not isinstance(value, (int, np.integer)):
            self.values = self.values.astype(np.float64)
        try:
            self.values[i] = value
        except OverflowError:
            raise ValueError(f"{value!r} is outside the 64-bit integer range") from None
        self.present[i] = True

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, NumericColumn):
            return bool(np.array_equal(self.present, other.present)
                        and np.array_equal(self.values[self.present], other.values[other.present]))
        if isinstance(other, (list, tuple)):
            return self.tolist() == list(other)
        return NotImplemented

    __hash__ = None  # mutable, like the list it stands for

    def __add__(self, other: Any) -> list[Any]:
        return self.tolist() + list(other)

    def __radd__(self, other: Any) -> list[Any]:
        return list(other) + self.tolist()

    def __repr__(self) -> str:
        return f"NumericColumn({self.values.dtype}, n={len(self)}, present={int(self.present.sum())})"

    def tolist(self) -> list[Any]:
        """The values as a list of Python numbers, ``None`` where missing (also what JSON gets)."""
        return self[:]

    def to_array(self, dtype: Any = np.float64, fill: Any = np.nan) -> np.ndarray:
        """The values as ``dtype``, ``fill`` where missing; shape ``(n,)``."""
        missing = ~self.present
        if missing.any():
            if np.issubdtype(np.dtype(dtype), np.integer) and isinstance(fill, float) and math.isnan(fill):
                raise ValueError(f"{int(missing.sum())} images have no value: pass a fill for an integer column")
            out = self.values.astype(dtype)
            out[missing] = fill
            return out
        return self.values.astype(dtype)


#: Integers above this lose precision as float64 (2**53, IEEE 754 double's 53-bit significand).
_EXACT_FLOAT_INT = 2**53


def _exact_in(col: NumericColumn, value: Any) -> bool:
    """Whether ``value`` fits ``col`` without losing precision (an int column turns float64
    when a float arrives, so its integers, and any new one, must stay below 2**53)."""
    is_int = isinstance(value, (int, np.integer))
    if col.values.dtype == np.int64 and is_int:
        return True
    if is_int and abs(int(value)) > _EXACT_FLOAT_INT:
        return False
    if col.values.dtype == np.int64 and col.present.any():
        return int(np.abs(col.values[col.present]).max()) <= _EXACT_FLOAT_INT
    return True


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


class _ComputedBuilder:
    """Fills ``{key: column}`` for one check as records arrive (see :func:`collect_records`).

    A key whose values are numbers becomes a :class:`NumericColumn` (``int64`` while every
    value is an integer, then ``float64``); any other key, or one that mixes numbers with
    other types, a list. A key's repeated strings (a colour mode, a bin name) are shared,
    so each is one object however many images carry it; a key with more than
    :attr:`MAX_SHARED` distinct strings (a hash) stops sharing, since each value is unique.
    """

    MAX_SHARED = 256

    def __init__(self, n: int):
        self.n = n
        self.cols: dict[str, Any] = {}
        self.shared: dict[str, dict[str, str] | None] = {}

    def set(self, i: int, key: str, value: Any) -> None:
        col = self.cols.get(key)
        if col is None:
            if _is_number(value):
                col = NumericColumn(np.zeros(self.n, dtype=np.int64 if isinstance(value, (int, np.integer))
                                             else np.float64), np.zeros(self.n, dtype=bool))
            else:
                col = [None] * self.n
            self.cols[key] = col
        if value is None:
            return
        if type(col) is NumericColumn:
            # the common cases first, without the checks (6.7 -> under 1 us a value; 10 values
            # per image on CIFAR made this the driver's main cost): a Python float into a
            # float column, a Python int within 2**53 into either
            kind = type(value)
            if kind is float and col.values.dtype == np.float64 or \
                    kind is int and -_EXACT_FLOAT_INT <= value <= _EXACT_FLOAT_INT and col.values.dtype == np.int64:
                col.values[i] = value
                col.present[i] = True
                return
            if _is_number(value) and _exact_in(col, value):
                try:
                    col[i] = value
                    return
                except ValueError:  # an int beyond int64: keep Python ints
                    pass
            col = self.cols[key] = list(col)
        elif type(value) is str:
            shared = self.shared.get(key, {})
            if shared is not None:
                value = shared.setdefault(value, value)
                self.shared[key] = shared if len(shared) <= self.MAX_SHARED else None
        col[i] = value


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
            image, ``None`` for unreadable images or when ``compute`` failed. A column is a
            sequence of length ``n``: a :class:`NumericColumn` for numbers, else a list.
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
    column per computed key (a :class:`NumericColumn` for numbers), then dropped: the
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
                       error=error, computed={name: b.cols for name, b in builders.items()}, failures=failures)


__all__ = ["NumericColumn", "PassColumns", "collect_records"]
