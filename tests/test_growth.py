"""streamfm.growth: large arrays grow in place (no copy), and are copied when held elsewhere."""

import mmap

import numpy as np

from streamfm.growth import MAPPED_BYTES, _mapping_of, empty_rows, grow_attribute, resize_rows


class Holder:
    pass


def test_large_arrays_grow_in_place_keeping_rows_and_zero_tail():
    h = Holder()
    rows = MAPPED_BYTES // 32 + 1
    h.a = empty_rows(rows, (8,), np.float32)
    assert isinstance(_mapping_of(h.a), mmap.mmap) and not h.a.any()
    h.a[:] = np.arange(rows, dtype=np.float32)[:, None]
    mm = _mapping_of(h.a)
    out = resize_rows(h, "a", 2 * rows)
    assert out is h.a and out.shape == (2 * rows, 8) and out.flags.writeable
    assert _mapping_of(out) is mm  # the same mapping, grown
    np.testing.assert_array_equal(out[:rows, 3], np.arange(rows, dtype=np.float32))
    assert not out[rows:].any()


def test_an_array_held_elsewhere_is_copied_and_the_view_stays_valid():
    h = Holder()
    h.a = empty_rows(MAPPED_BYTES // 8, (), np.int64)
    h.a[:] = 7
    view = h.a[:10]
    mm = _mapping_of(h.a)
    out = grow_attribute(h, "a", len(h.a) + 1)
    assert _mapping_of(out) is not mm and _mapping_of(out) is not None
    np.testing.assert_array_equal(view, 7)
    assert (out[: MAPPED_BYTES // 8] == 7).all() and not out[MAPPED_BYTES // 8 :].any()


def test_small_arrays_are_plain_and_grow_by_a_quarter():
    h = Holder()
    h.a = np.arange(100, dtype=np.int32)
    out = grow_attribute(h, "a", 101)
    assert out.shape == (125,) and _mapping_of(out) is None
    np.testing.assert_array_equal(out[:100], np.arange(100))
    assert not out[100:].any()
    assert grow_attribute(h, "a", 50) is out
