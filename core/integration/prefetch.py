"""A cache prefetch hint for numba kernels (imported by :mod:`.kernels` only: it imports numba).

Integration visits each shoebox row by row; consecutive rows of a box lie one detector row
(4-12 kB) apart in the frame and in the pixel directions, a stride the CPU's prefetcher
does not follow across the short box rows (20-30 pixels), so every row waited for memory.
Asking for the row two ahead while working on this one took the foreground pass of one
frame from 13.1 to 8.1-8.6 ms and the copy pass from 8.4 to 6.8 ms (frame 60 of the
benchmark sweep with the estimated profile model, isolated, best of 10).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def prefetch(typingctx, arr, index):
    """Hint that element ``index`` of the C-contiguous array ``arr`` (flat index) will be
    read soon (``llvm.prefetch``: read, keep in all cache levels). No effect on results;
    an index beyond the array is harmless (a prefetch never faults)."""
    sig = types.void(arr, index)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        byte_ptr = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_ptr, i32, i32, i32]),
            "llvm.prefetch.p0i8")
        ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), byte_ptr)
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen
