"""Memory hints for the kernels: "this array row will be read soon" (a CPU software prefetch;
not the reading ahead of chunks that `source.prefetch` configures).

A kernel whose cases are short (an MF case at k = 8 reads and writes two rows of 8 factors)
waits on the memory of each case in turn: the processor's out-of-order window is too small to
overlap the next case's cache misses (its w, V and AdaGrad rows, at random places) with this
one's arithmetic. Asking for the rows of a case a few cases ahead (`llvm.prefetch`, PREFETCHT0
on x86) hides that latency where the model does not fit in the core's cache.

Kernels write their hint loops out: the same loop as an inlined helper taking the arrays was
1.3-2.5x slower than written out (numba's reference counting of the arrays passed; predict
kernel, side by side), and gave back a third to a half of the BPR kernel's gain.

A hint changes no value and cannot fault (LLVM LangRef: "prefetches cannot trap"), so a
stale or even wrong index only wastes the hint; the kernels still give bit-identical results.
"""

from __future__ import annotations

import llvmlite.binding as llvm
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# The intrinsic is overloaded on the pointer type: opaque pointers from LLVM 15 on, i8* before.
_INTRINSIC = "llvm.prefetch.p0" if llvm.llvm_version_info[0] >= 15 else "llvm.prefetch.p0i8"
_LINE = 64  # bytes of a cache line

# How many cases (rows, events) ahead the kernels hint a case's memory. On this machine 2 to 8
# gave the same speed (SGD regression and BPR, k 8 and 32), 16 was slower for BPR.
CASES_AHEAD = 4

# The prediction, ranking and SGDA kernels hint only models whose V takes at least this many
# bytes: a smaller one stays in a core's cache (L2 is 256 KB to 2 MB on current x86 cores) and
# the hints would only cost instructions (prediction at 10,000 features, k = 8: 0.82-0.93x the
# rows/s without them). The SGD / AdaGrad pass follows the same rule on one thread and hints
# every model under Hogwild threads (see sgd._layout_pass).
HINT_MIN_BYTES = 1 << 19


@intrinsic
def _prefetch_at(typingctx, arr, i, offset):
    """Prefetch (read, keep in all cache levels) the byte `offset` of row i of `arr`."""
    sig = types.void(arr, i, offset)

    def codegen(context, builder, signature, args):
        aryty, ity, oty = signature.args
        ary = context.make_array(aryty)(context, builder, args[0])
        stride = builder.extract_value(ary.strides, 0)
        idx = context.cast(builder, args[1], ity, types.intp)
        off = context.cast(builder, args[2], oty, types.intp)
        base = builder.ptrtoint(ary.data, ir.IntType(64))
        addr = builder.add(builder.add(base, builder.mul(idx, stride)), off)
        i32 = ir.IntType(32)
        ptr = ir.PointerType(ir.IntType(8))
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [ptr, i32, i32, i32]), _INTRINSIC
        )
        # rw 0 (read), locality 3 (keep in every level), cache type 1 (data)
        builder.call(fn, [builder.inttoptr(addr, ptr), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@njit(nogil=True, inline="always")
def hint_read(arr, i):
    """Hint that arr[i] (1-d: one item; 2-d: the whole row, every cache line of it) is read
    soon. No effect on any value."""
    if arr.ndim == 1:
        _prefetch_at(arr, i, 0)
    else:
        last = arr.strides[0] - 1
        for offset in range(0, last, _LINE):
            _prefetch_at(arr, i, offset)
        _prefetch_at(arr, i, last)  # a row not aligned to a line ends in one more line


@njit(nogil=True, inline="always")
def hinted_cases(V, n):
    """How many cases of a pass of n a kernel hints ahead of: n, or 0 where V takes fewer than
    HINT_MIN_BYTES (it stays in the core's cache; see above). Once per pass, not per case."""
    return n if V.nbytes >= HINT_MIN_BYTES else 0
