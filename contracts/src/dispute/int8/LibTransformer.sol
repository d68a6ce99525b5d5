// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Int8Errors} from "./Int8Errors.sol";
import {LibDescriptor as LD} from "./LibDescriptor.sol";
import {LibInt8Ops} from "./LibInt8Ops.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";

/// @title LibTransformer
/// @notice Typing rules, one-step bounds, element ranges and element semantics of the integer
///         transformer ops 0x0F-0x16 (matmul, lut, mul, gather, softmax, layernorm, rope, topk; docs/protocol.md 2.2, 3.3-3.4):
///         the twin of rules._transformer_out / step_reads and reference.element_ranges /
///         compute_element for these opcodes. Used only by Int8TransformerVerifier, so that
///         Int8Verifier's runtime code stays under EIP-170 (docs/protocol.md 5.7.1).
/// @dev Pure. Arithmetic in int256: |matmul's accumulator| <= 255 * 255 * K < 2^31, no wrap.
library LibTransformer {
    using LD for LD.TType;

    function _need(bool ok, uint8 reason) private pure {
        if (!ok) revert Int8Errors.Int8Verifier_BadDescriptor(reason);
    }

    // ================================================================ rules (rules.py)

    /// @notice Full validation of a decoded 0x0F-0x16 descriptor (rules.check_descriptor): input
    ///         count, REQ block, the op's typing rule, the declared output, tensor sizes, one-step bounds.
    function check(LD.Desc memory D) internal pure {
        uint256 op = D.opcode;
        _need(op >= LD.OP_MATMUL && op <= LD.OP_TOPK, LD.R_OPCODE);
        bool hasReq = op == LD.OP_MATMUL || op == LD.OP_MUL || op == LD.OP_LAYERNORM || op == LD.OP_ROPE;
        uint256 mode = hasReq ? uint256(D.a[LD.A_MODE]) : LD.MODE_NONE;
        uint256 nIn = op == LD.OP_LAYERNORM ? 3 : op == LD.OP_TOPK ? 1 : 2;
        _need(D.ins.length == nIn + (mode == LD.MODE_PER_CHANNEL ? 1 : 0), LD.R_INPUT_COUNT);
        if (hasReq) LD._checkReq(D.a);
        if (mode == LD.MODE_PER_CHANNEL) _need(D.ins[2].kind == LD.KIND_WEIGHT, LD.R_INPUT_TYPE);
        _need(LD._eq(D.out, _expectedOut(D, D.ins[0].t, mode)), LD.R_OUTPUT);
        for (uint256 i = 0; i < D.ins.length; ++i) {
            _need(D.ins[i].t.nbytes() <= LD.MAX_TENSOR_BYTES, LD.R_TOO_LARGE);
        }
        _need(D.out.nbytes() <= LD.MAX_TENSOR_BYTES, LD.R_TOO_LARGE);
        _need(stepLeaves(D) <= LD.MAX_STEP_LEAVES, LD.R_STEP);
        // softmax and layernorm scan their row once (5.7.8): MAX_STEP_ELEMENTS bounds its length
        if (op == LD.OP_SOFTMAX || op == LD.OP_LAYERNORM) {
            _need(D.out.dims[D.out.rank - 1] <= LD.MAX_STEP_ELEMENTS, LD.R_STEP);
        }
        // topk scans its row or chunk twice, the second time word-wise for values (rules.step_reads:
        // a value counts 1, a pair 4: two int32 elements, two scans)
        if (op == LD.OP_TOPK) {
            (uint256 size, bool pairs) = _topkSpan(D);
            _need((pairs ? 4 : 1) * size <= LD.MAX_STEP_ELEMENTS, LD.R_STEP);
        }
    }

    /// @notice (M, K, N) of a matmul (rules.matmul_geometry): A is [.., M, K] ([.., K, M] when
    ///         ta), B [.., K, N] ([.., N, K] when tb).
    function matmulGeometry(LD.Desc memory D) internal pure returns (uint256 m, uint256 k, uint256 n) {
        LD.TType memory a = D.ins[0].t;
        LD.TType memory b = D.ins[1].t;
        (m, k) = D.a[LD.A_TA] == 1 ? (a.dims[a.rank - 1], a.dims[a.rank - 2]) : (a.dims[a.rank - 2], a.dims[a.rank - 1]);
        n = D.a[LD.A_TB] == 1 ? b.dims[b.rank - 2] : b.dims[b.rank - 1];
    }

    /// @notice Leaves one element's one-step opens (rules.step_reads; these ops scan no element
    ///         loop beyond matmul's dot product, which MAX_K bounds).
    function stepLeaves(LD.Desc memory D) internal pure returns (uint256) {
        uint256 op = D.opcode;
        if (op == LD.OP_MATMUL) {
            // row m of A and column n of B, each contiguous or strided
            (uint256 m, uint256 k, uint256 n) = matmulGeometry(D);
            return LD.rangeLeaves(D.a[LD.A_TA] == 1 ? (k - 1) * m + 1 : k)
                + LD.rangeLeaves(D.a[LD.A_TB] == 1 ? k : (k - 1) * n + 1);
        }
        if (op == LD.OP_LUT) return LD.rangeLeaves(1) + LD.rangeLeaves(256); // the element, the whole table
        if (op == LD.OP_MUL) return 2 * LD.rangeLeaves(1);
        // layernorm: the row, gamma[k] and beta[k]
        if (op == LD.OP_LAYERNORM) {
            return LD.rangeLeaves(D.ins[0].t.dims[D.ins[0].t.rank - 1]) + LD.rangeLeaves(1) + LD.rangeLeaves(4);
        }
        if (op == LD.OP_TOPK) {
            // the row or the chunk: int8 values or 8-byte pairs
            (uint256 size, bool pairs) = _topkSpan(D);
            return LD.rangeLeaves(pairs ? 8 * size : size);
        }
        // rope: x[r, k .. k + D/2] (one range) and the 8-byte (cos, sin) pair
        if (op == LD.OP_ROPE) return LD.rangeLeaves(D.ins[0].t.dims[D.ins[0].t.rank - 1] / 2 + 1) + LD.rangeLeaves(8);
        // softmax: the element's row and the 1 KiB int32 exp table
        if (op == LD.OP_SOFTMAX) return LD.rangeLeaves(D.ins[0].t.dims[D.ins[0].t.rank - 1]) + LD.rangeLeaves(1024);
        return LD.rangeLeaves(4) + LD.rangeLeaves(1); // gather: the id and one byte of its row
    }

    /// @notice (entries one element scans, pairs input) of a topk: the row's N or L, or the chunk q.
    function _topkSpan(LD.Desc memory D) private pure returns (uint256 size, bool pairs) {
        LD.TType memory x = D.ins[0].t;
        pairs = D.a[LD.A_PAIRS] == 1;
        size = D.a[LD.A_Q] != 0 ? uint256(D.a[LD.A_Q]) : x.dims[x.rank - (pairs ? 2 : 1)];
    }

    /// @notice topk's output (rules._topk_out): values int8 [.., L] or pairs int32 [.., N, 2];
    ///         q = 0: int32 [.., k] with 1 <= k <= N; q >= 1: int32 [.., G, k, 2], k <= q <= N.
    function _topkOut(LD.Desc memory D, LD.TType memory x) private pure returns (LD.TType memory o) {
        uint256 pairs = uint256(D.a[LD.A_PAIRS]);
        _need(pairs <= 1, LD.R_ATTR);
        if (pairs == 1) _need(x.dtype == LD.DT_INT32 && x.rank >= 2 && x.dims[x.rank - 1] == 2, LD.R_INPUT_TYPE);
        else _need(x.dtype == LD.DT_INT8, LD.R_INPUT_TYPE);
        uint256 lead = x.rank - 1 - pairs;
        uint256 n = x.dims[lead];
        uint256 k = uint256(D.a[LD.A_K]);
        uint256 q = uint256(D.a[LD.A_Q]);
        o.dtype = LD.DT_INT32;
        for (uint256 t = 0; t < 4; ++t) {
            o.dims[t] = t < lead ? x.dims[t] : 1;
        }
        if (q == 0) {
            _need(k >= 1 && k <= n, LD.R_ATTR);
            o.rank = lead + 1;
            o.dims[lead] = k;
            return o;
        }
        _need(k >= 1 && k <= q && q <= n, LD.R_ATTR);
        _need(lead <= 1, LD.R_INPUT_TYPE);
        o.rank = lead + 3;
        o.dims[lead] = (n + q - 1) / q;
        o.dims[lead + 1] = k;
        o.dims[lead + 2] = 2;
    }

    function _expectedOut(LD.Desc memory D, LD.TType memory x, uint256 mode) private pure returns (LD.TType memory o) {
        uint256 op = D.opcode;
        if (op == LD.OP_TOPK) return _topkOut(D, x);
        LD.TType memory y = D.ins[1].t;
        if (op == LD.OP_MATMUL) {
            _need(mode <= LD.MODE_PER_TENSOR, LD.R_REQUANT);
            _need(D.a[LD.A_TA] <= 1 && D.a[LD.A_TB] <= 1, LD.R_ATTR);
            _need(x.dtype == LD.DT_INT8 && y.dtype == LD.DT_INT8 && x.rank >= 2 && y.rank == x.rank, LD.R_INPUT_TYPE);
            for (uint256 i = 0; i + 2 < x.rank; ++i) {
                _need(x.dims[i] == y.dims[i], LD.R_INPUT_TYPE);
            }
            (uint256 m, uint256 k, uint256 n) = matmulGeometry(D);
            _need(y.dims[x.rank - (D.a[LD.A_TB] == 1 ? 1 : 2)] == k, LD.R_INPUT_TYPE);
            _need(k <= LD.MAX_K, LD.R_ATTR);
            o = LD._like(x, mode == LD.MODE_NONE ? LD.DT_INT32 : LD.DT_INT8);
            o.dims[x.rank - 2] = m;
            o.dims[x.rank - 1] = n;
            return o;
        }
        if (op == LD.OP_MUL) {
            _need(mode == LD.MODE_PER_TENSOR, LD.R_REQUANT);
            _need(x.dtype == LD.DT_INT8 && LD._eq(y, x), LD.R_INPUT_TYPE);
            return x;
        }
        // lut, gather: the table is a weight of the program
        _need(D.ins[1].kind == LD.KIND_WEIGHT, LD.R_INPUT_TYPE);
        if (op == LD.OP_LAYERNORM) return _layernormOut(D, x, y, mode);
        if (op == LD.OP_ROPE) {
            // x int8 [.., T, D] with D even; the (cos, sin) table int32 [P, D/2, 2]; T + off <= P
            _need(mode == LD.MODE_PER_TENSOR, LD.R_REQUANT);
            uint256 dd = x.dims[x.rank - 1];
            _need(x.dtype == LD.DT_INT8 && x.rank >= 2 && dd % 2 == 0 && y.dtype == LD.DT_INT32 && y.rank == 3
                && y.dims[1] == dd / 2 && y.dims[2] == 2, LD.R_INPUT_TYPE);
            _need(x.dims[x.rank - 2] + uint256(D.a[LD.A_OFF]) <= y.dims[0], LD.R_ATTR);
            return x;
        }
        if (op == LD.OP_SOFTMAX) {
            _need(D.a[LD.A_CAUSAL] <= 1, LD.R_ATTR);
            _need(x.dtype == LD.DT_INT8 && x.rank >= 2 && LD._is(y, LD.DT_INT32, 256, 1, 1), LD.R_INPUT_TYPE);
            return x;
        }
        if (op == LD.OP_LUT) {
            _need(x.dtype == LD.DT_INT8 && LD._is(y, LD.DT_INT8, 256, 1, 1), LD.R_INPUT_TYPE);
            return x;
        }
        _need(x.dtype == LD.DT_INT32 && x.rank <= 3, LD.R_INPUT_TYPE);
        _need(y.dtype == LD.DT_INT8 && y.rank == 2 && y.dims[0] <= LD.MAX_GATHER_ROWS, LD.R_INPUT_TYPE);
        o = LD._like(x, LD.DT_INT8);
        o.rank = x.rank + 1;
        o.dims[x.rank] = y.dims[1];
    }

    // ================================================================ which bytes

    /// @notice matmul: row m of A and column n of B (contiguous, or strided by M / N); lut: the
    ///         element and the whole 256-byte table; mul: the element of each input; gather: the
    ///         element's id only (its table byte depends on the id: `gatherRow`, once it is opened).
    function ranges(LD.Desc memory D, uint256 i) internal pure returns (LibInt8Ops.Range[] memory r) {
        uint256 op = D.opcode;
        if (op == LD.OP_GATHER) {
            r = new LibInt8Ops.Range[](1);
            // slither-disable-next-line divide-before-multiply -- id index: floor(i / D) * 4 is the intended start
            uint256 row = i / D.ins[1].t.dims[1];
            r[0] = LibInt8Ops.Range(0, 4 * row, 4 * row + 4, 0);
            return r;
        }
        if (op == LD.OP_TOPK) {
            // the row (q = 0) or chunk g of the row, int8 values or 8-byte pairs
            r = new LibInt8Ops.Range[](1);
            (uint256 s, uint256 e) = _topkRange(D, i);
            uint256 w = D.a[LD.A_PAIRS] == 1 ? 8 : 1;
            r[0] = LibInt8Ops.Range(0, s * w, e * w, 0);
            return r;
        }
        r = new LibInt8Ops.Range[](op == LD.OP_LAYERNORM ? 3 : 2);
        if (op == LD.OP_LAYERNORM) {
            // the element's row, gamma[k], beta[k]
            uint256 dd = D.out.dims[D.out.rank - 1];
            uint256 k = i % dd;
            r[0] = LibInt8Ops.Range(0, i - k, i - k + dd, 0);
            r[1] = LibInt8Ops.Range(1, k, k + 1, 0);
            r[2] = LibInt8Ops.Range(2, 4 * k, 4 * k + 4, 0);
        } else if (op == LD.OP_ROPE) {
            // x[r, k] .. x[r, k + D/2] and the (cos, sin) pair of position t + off, column k
            uint256 dd = D.out.dims[D.out.rank - 1];
            uint256 h = dd / 2;
            uint256 k = i % h;
            uint256 p = (i / dd) % D.out.dims[D.out.rank - 2] + uint256(D.a[LD.A_OFF]);
            r[0] = LibInt8Ops.Range(0, i - i % dd + k, i - i % dd + k + h + 1, 0);
            // slither-disable-next-line divide-before-multiply -- h = D/2 is exact (D even by the typing rule)
            r[1] = LibInt8Ops.Range(1, 8 * (p * h + k), 8 * (p * h + k) + 8, 0);
        } else if (op == LD.OP_LUT) {
            r[0] = LibInt8Ops.Range(0, i, i + 1, 0);
            r[1] = LibInt8Ops.Range(1, 0, 256, 0);
        } else if (op == LD.OP_SOFTMAX) {
            // the element's row and the whole int32 [256] exp table
            uint256 len = D.out.dims[D.out.rank - 1];
            r[0] = LibInt8Ops.Range(0, i - i % len, i - i % len + len, 0);
            r[1] = LibInt8Ops.Range(1, 0, 1024, 0);
        } else if (op == LD.OP_MUL) {
            r[0] = LibInt8Ops.Range(0, i, i + 1, 0);
            r[1] = LibInt8Ops.Range(1, i, i + 1, 0);
        } else {
            (r[0], r[1]) = _matmulRanges(D, i);
        }
    }

    /// @dev Entries [s, e) (flat, in entries of the row axis) topk's element i reads.
    function _topkRange(LD.Desc memory D, uint256 i) private pure returns (uint256 s, uint256 e) {
        LD.TType memory x = D.ins[0].t;
        uint256 n = x.dims[x.rank - (D.a[LD.A_PAIRS] == 1 ? 2 : 1)];
        uint256 k = uint256(D.a[LD.A_K]);
        uint256 q = uint256(D.a[LD.A_Q]);
        if (q == 0) {
            // slither-disable-next-line divide-before-multiply -- row index: floor(i / k) times the row
            s = (i / k) * n;
            return (s, s + n);
        }
        uint256 g = (n + q - 1) / q;
        // slither-disable-next-line divide-before-multiply -- (row, chunk) of element i: floor divisions
        uint256 c = i / (2 * k);
        // slither-disable-next-line divide-before-multiply -- row start plus the chunk's start
        s = (c / g) * n + (c % g) * q;
        // slither-disable-next-line divide-before-multiply -- the row's start plus the chunk's end
        e = (c / g) * n + ((c % g) + 1) * q;
        if (e > (c / g + 1) * n) e = (c / g + 1) * n;
    }

    function _matmulRanges(LD.Desc memory D, uint256 i)
        private
        pure
        returns (LibInt8Ops.Range memory ra, LibInt8Ops.Range memory rb)
    {
        (uint256 m, uint256 k, uint256 n) = matmulGeometry(D);
        // slither-disable-next-line divide-before-multiply -- batch index: floor(i / (M*N)) times the batch's block
        uint256 bi = i / (m * n);
        uint256 mi = (i / n) % m;
        uint256 ni = i % n;
        // slither-disable-next-line divide-before-multiply -- batch index times the batch's block
        uint256 a0 = bi * m * k;
        // slither-disable-next-line divide-before-multiply -- batch index times the batch's block
        uint256 b0 = bi * k * n;
        ra = D.a[LD.A_TA] == 1
            ? LibInt8Ops.Range(0, a0 + mi, a0 + (k - 1) * m + mi + 1, 0)
            : LibInt8Ops.Range(0, a0 + mi * k, a0 + (mi + 1) * k, 0);
        rb = D.a[LD.A_TB] == 1
            ? LibInt8Ops.Range(1, b0 + ni * k, b0 + (ni + 1) * k, 0)
            : LibInt8Ops.Range(1, b0 + ni, b0 + (k - 1) * n + ni + 1, 0);
    }

    /// @notice The table byte gather's element i reads for the id at memory address `idPtr`
    ///         (reference.gather_row): none when the id is outside [0, V) (the element is then 0).
    function gatherRow(LD.Desc memory D, uint256 i, uint256 idPtr) internal pure returns (LibInt8Ops.Range[] memory r) {
        int256 id = LibInt8Ops._i32(idPtr);
        LD.TType memory t = D.ins[1].t;
        if (id < 0 || id >= int256(t.dims[0])) return new LibInt8Ops.Range[](0);
        uint256 j = uint256(id) * t.dims[1] + i % t.dims[1];
        r = new LibInt8Ops.Range[](1);
        r[0] = LibInt8Ops.Range(1, j, j + 1, 0);
    }

    // ================================================================ the value

    /// @notice The element from its opened ranges (compute_element). Gather's `r` is its opened
    ///         table range: one byte, or none for an id outside [0, V) (the element is then 0).
    function compute(LD.Desc memory D, uint256 i, LibInt8Ops.Range[] memory r) internal pure returns (int256) {
        uint256 op = D.opcode;
        int256[10] memory a = D.a;
        if (op == LD.OP_SOFTMAX) return _softmax(D, i, r[0].ptr, r[1].ptr);
        if (op == LD.OP_LAYERNORM) return _layernorm(D, i, r);
        if (op == LD.OP_ROPE) return _rope(D, i, r[0].ptr, r[1].ptr);
        if (op == LD.OP_TOPK) return _topk(D, i, r[0]);
        if (op == LD.OP_GATHER) return r.length == 1 ? LibInt8Ops._i8(r[0].ptr) : int256(0);
        // y = T[x + 128]: the table range is [0, 256)
        if (op == LD.OP_LUT) return LibInt8Ops._i8(r[1].ptr + uint256(LibInt8Ops._i8(r[0].ptr) + 128));
        if (op == LD.OP_MUL) {
            int256 t = (LibInt8Ops._i8(r[0].ptr) - a[LD.A_XZP]) * (LibInt8Ops._i8(r[1].ptr) - a[LD.A_ZB]);
            return LibInt8Ops._requant(a, t, 0);
        }
        (uint256 m, uint256 k, uint256 n) = matmulGeometry(D);
        uint256 sa = a[LD.A_TA] == 1 ? m : 1;
        uint256 sb = a[LD.A_TB] == 1 ? 1 : n;
        int256 acc;
        if (sa == 1 && sb == 1) {
            // both contiguous: linear's word-wise dot product, then
            // sum (x - za)(w - zb) = sum (x - za) w - zb * (sum x - K za)
            acc = LibInt8Ops._dot(r[0].ptr, r[1].ptr, k, a[LD.A_XZP]);
            if (a[LD.A_ZB] != 0) acc -= a[LD.A_ZB] * (_sumI8(r[0].ptr, k) - int256(k) * a[LD.A_XZP]);
        } else {
            acc = _dotStrided(r[0].ptr, sa, r[1].ptr, sb, k, a[LD.A_XZP], a[LD.A_ZB]);
        }
        // |acc| <= 255 * 255 * K < 2^31 (K <= MAX_K): exact, no wrap (docs/protocol.md 2.2)
        return a[LD.A_MODE] == int256(LD.MODE_NONE) ? acc : LibInt8Ops._requant(a, acc, 0);
    }

    /// @notice Softmax element i (reference.softmax_element, docs/protocol.md 2.2.1) from its row at
    ///         `row` and the int32 [256] exp table at `tab`. One pass over the n unmasked columns
    ///         builds the histogram of x + 128; the row max M is its highest bucket and
    ///         S = sum_u h[u] * e(M - u) with e(0) = 2^15, e(d) = clamp(T[d], 0, 2^15).
    function _softmax(LD.Desc memory D, uint256 i, uint256 row, uint256 tab) private pure returns (int256) {
        uint256 len = D.out.dims[D.out.rank - 1];
        uint256 j = i % len;
        uint256 n = len;
        if (D.a[LD.A_CAUSAL] == 1) {
            // query position t = (i / len) % R; columns j > t + off are masked (column 0 never is)
            uint256 lim = (i / len) % D.out.dims[D.out.rank - 2] + uint256(D.a[LD.A_OFF]) + 1;
            if (lim < n) n = lim;
        }
        if (j >= n) return -128;
        uint256[256] memory h = _histogram(row, n);
        uint256 top = 255;
        while (h[top] == 0) --top; // the bucket of x[r, 0] is non-empty: stops at or above it
        uint256 s = 0;
        for (uint256 u = 0; u <= top; ++u) {
            if (h[u] != 0) s += h[u] * _exp(tab, top - u);
        }
        // 2^15 <= s <= L * 2^15 < 2^29; the numerator < 2^25 + 2^29: exact
        uint256 ej = _exp(tab, top - uint256(LibInt8Ops._i8(row + j) + 128));
        uint256 q = (512 * ej + s) / (2 * s);
        return q >= 255 ? int256(127) : int256(q) - 128;
    }

    /// @notice Rope element i (reference.rope_element, docs/protocol.md 2.2.3): a = x[r, k] - x_zp,
    ///         b = x[r, k + D/2] - x_zp, c, s the table's pair clamped to [-2^15, 2^15]; the first
    ///         half a c - b s, the second b c + a s (|acc| < 2^24); y = requant(acc).
    function _rope(LD.Desc memory D, uint256 i, uint256 xp, uint256 tp) private pure returns (int256) {
        uint256 dd = D.out.dims[D.out.rank - 1];
        int256 zp = D.a[LD.A_XZP];
        int256 a = LibInt8Ops._i8(xp) - zp;
        int256 b = LibInt8Ops._i8(xp + dd / 2) - zp;
        int256 c = _clamp15(LibInt8Ops._i32(tp));
        int256 s = _clamp15(LibInt8Ops._i32(tp + 4));
        return LibInt8Ops._requant(D.a, i % dd < dd / 2 ? a * c - b * s : b * c + a * s, 0);
    }

    function _clamp15(int256 v) private pure returns (int256) {
        return v > 32768 ? int256(32768) : v < -32768 ? int256(-32768) : v;
    }

    /// @dev Counts of x + 128 over the n int8 at memory address `row` (256 buckets): whole 32-byte
    ///      words with the 32 byte lanes unrolled (one load per word), then the tail byte by byte.
    function _histogram(uint256 row, uint256 n) private pure returns (uint256[256] memory h) {
        // SAFETY: reads the n bytes of the opened range and writes the 256 words of h; memory-safe.
        assembly ("memory-safe") {
            let p := row
            for { let end := add(row, shl(5, shr(5, n))) } lt(p, end) { p := add(p, 32) } {
                let w := mload(p)
                let s := add(h, shl(5, xor(byte(0, w), 0x80)))
                mstore(s, add(mload(s), 1))
                s := add(h, shl(5, xor(byte(1, w), 0x80)))
                mstore(s, add(mload(s), 1))
                s := add(h, shl(5, xor(byte(2, w), 0x80)))
                mstore(s, add(mload(s), 1))
                s := add(h, shl(5, xor(byte(3, w), 0x80)))
                mstore(s, add(mload(s), 1))
                s := add(h, shl(5, xor(byte(4, w), 0x80)))
                mstore(s, add(mload(s), 1))
                s := add(h, shl(5, xor(byte(5, w), 0x80)))
                mstore(s, add(mload(s), 1))
                s := add(h, shl(5, xor(byte(6, w), 0x80)))
                mstore(s, add(mload(s), 1))
                s := add(h, shl(5, xor(byte(7, w), 0x80)))
                mstore(s, add(mload(s), 1))
                s := add(h, shl(5, xor(byte(8, w), 0x80)))
                mstore(s, add(mload(s), 1))
                s := add(h, shl(5, xor(byte(9, w), 0x80)))
                mstore(s, add(mload(s), 1))
                s := add(h, shl(5, xor(byte(10, w), 0x80)))
                mstore(s, add(mload(s), 1))
                s := add(h, shl(5, xor(byte(11, w), 0x80)))
                mstore(s, add(mload(s), 1))
                s := add(h, shl(5, xor(byte(12, w), 0x80)))
                mstore(s, add(mload(s), 1))
                s := add(h, shl(5, xor(byte(13, w), 0x80)))
                mstore(s, add(mload(s), 1))
                s := add(h, shl(5, xor(byte(14, w), 0x80)))
                mstore(s, add(mload(s), 1))
                s := add(h, shl(5, xor(byte(15, w), 0x80)))
                mstore(s, add(mload(s), 1))
                s := add(h, shl(5, xor(byte(16, w), 0x80)))
                mstore(s, add(mload(s), 1))
                s := add(h, shl(5, xor(byte(17, w), 0x80)))
                mstore(s, add(mload(s), 1))
                s := add(h, shl(5, xor(byte(18, w), 0x80)))
                mstore(s, add(mload(s), 1))
                s := add(h, shl(5, xor(byte(19, w), 0x80)))
                mstore(s, add(mload(s), 1))
                s := add(h, shl(5, xor(byte(20, w), 0x80)))
                mstore(s, add(mload(s), 1))
                s := add(h, shl(5, xor(byte(21, w), 0x80)))
                mstore(s, add(mload(s), 1))
                s := add(h, shl(5, xor(byte(22, w), 0x80)))
                mstore(s, add(mload(s), 1))
                s := add(h, shl(5, xor(byte(23, w), 0x80)))
                mstore(s, add(mload(s), 1))
                s := add(h, shl(5, xor(byte(24, w), 0x80)))
                mstore(s, add(mload(s), 1))
                s := add(h, shl(5, xor(byte(25, w), 0x80)))
                mstore(s, add(mload(s), 1))
                s := add(h, shl(5, xor(byte(26, w), 0x80)))
                mstore(s, add(mload(s), 1))
                s := add(h, shl(5, xor(byte(27, w), 0x80)))
                mstore(s, add(mload(s), 1))
                s := add(h, shl(5, xor(byte(28, w), 0x80)))
                mstore(s, add(mload(s), 1))
                s := add(h, shl(5, xor(byte(29, w), 0x80)))
                mstore(s, add(mload(s), 1))
                s := add(h, shl(5, xor(byte(30, w), 0x80)))
                mstore(s, add(mload(s), 1))
                s := add(h, shl(5, xor(byte(31, w), 0x80)))
                mstore(s, add(mload(s), 1))
            }
            for { let e := add(row, n) } lt(p, e) { p := add(p, 1) } {
                let slot := add(h, shl(5, xor(byte(0, mload(p)), 0x80)))
                mstore(slot, add(mload(slot), 1))
            }
        }
    }

    /// @notice Topk element i (reference._topk_element, docs/protocol.md 2.2.4) from its row or
    ///         chunk `r`: the entry of rank m in (value desc, position asc) order. One scan builds
    ///         the 256-bucket histogram (pairs: values clamped to [-128, 127]); walking the buckets
    ///         down gives the value u of rank m and how many (`need`) of its entries come first; a
    ///         second scan finds that occurrence (values word by word: 32 bytes compared at once).
    function _topk(LD.Desc memory D, uint256 i, LibInt8Ops.Range memory r) private pure returns (int256) {
        uint256 k = uint256(D.a[LD.A_K]);
        bool pairs = D.a[LD.A_PAIRS] == 1;
        uint256 len = (r.end - r.start) / (pairs ? 8 : 1);
        uint256 m = i % k;
        if (D.a[LD.A_Q] != 0) {
            m = (i / 2) % k;
            // a short last chunk: positions beyond it are (-128, -1)
            if (m >= len) return i % 2 == 0 ? int256(-128) : int256(-1);
        }
        uint256[256] memory h = pairs ? _histPairs(r.ptr, len) : _histogram(r.ptr, len);
        uint256 u = 256;
        uint256 above;
        while (true) {
            // sum h = len > m: stops at the bucket holding rank m
            --u;
            if (m < above + h[u]) break;
            above += h[u];
        }
        if (D.a[LD.A_Q] != 0 && i % 2 == 0) return int256(u) - 128;
        uint256 need = m - above;
        if (pairs) return LibInt8Ops._i32(r.ptr + 8 * _nthPair(r.ptr, len, u, need) + 4);
        // values: the global position r.start + t (the range starts at the row's or chunk's start)
        return int256(_nthByte(r.ptr, len, u ^ 0x80, need) + r.start % _rowLen(D));
    }

    /// @dev Row length of a topk values input (its last dim): the range's start modulo it is the
    ///      chunk's first position in its row (0 for q = 0).
    function _rowLen(LD.Desc memory D) private pure returns (uint256) {
        return D.ins[0].t.dims[D.ins[0].t.rank - 1];
    }

    /// @dev Counts of the buckets of the n pairs at p: each pair's little-endian int32 value
    ///      clamped to [-128, 127], plus 128.
    function _histPairs(uint256 p, uint256 n) private pure returns (uint256[256] memory h) {
        // SAFETY: reads the 8n bytes of the opened range and writes the 256 words of h; memory-safe.
        assembly ("memory-safe") {
            for { let e := add(p, shl(3, n)) } lt(p, e) { p := add(p, 8) } {
                let s := add(h, shl(5, bucket(mload(p))))
                mstore(s, add(mload(s), 1))
            }
            function bucket(w) -> u {
                let v := signextend(3, or(or(byte(0, w), shl(8, byte(1, w))), or(shl(16, byte(2, w)), shl(24, byte(3, w)))))
                u := add(v, 128)
                if slt(v, not(127)) { u := 0 }
                if sgt(v, 127) { u := 255 }
            }
        }
    }

    /// @dev Position of the (need+1)-th of the n pairs at p whose bucket is u (it exists).
    function _nthPair(uint256 p, uint256 n, uint256 u, uint256 need) private pure returns (uint256 t) {
        // SAFETY: reads the 8n bytes of the opened range; memory-safe.
        assembly ("memory-safe") {
            for {} lt(t, n) { t := add(t, 1) } {
                let w := mload(add(p, shl(3, t)))
                let v := signextend(3, or(or(byte(0, w), shl(8, byte(1, w))), or(shl(16, byte(2, w)), shl(24, byte(3, w)))))
                let b := add(v, 128)
                if slt(v, not(127)) { b := 0 }
                if sgt(v, 127) { b := 255 }
                if eq(b, u) {
                    if iszero(need) { break }
                    need := sub(need, 1)
                }
            }
        }
    }

    /// @dev Position of the (need+1)-th byte equal to b among the n bytes at p (it exists). Whole
    ///      words first: x = w XOR (b in every byte) has a zero byte exactly where w holds b;
    ///      ((x & 0x7f..) + 0x7f..) | x sets each byte's top bit iff that byte is non-zero (no carry
    ///      crosses a byte), the inverted top bits summed by one multiply count the matches.
    function _nthByte(uint256 p, uint256 n, uint256 b, uint256 need) private pure returns (uint256 pos) {
        // SAFETY: reads only the n bytes at p (whole words inside them, then single bytes); memory-safe.
        assembly ("memory-safe") {
            let ones := 0x0101010101010101010101010101010101010101010101010101010101010101
            let low := mul(ones, 0x7f)
            let bb := mul(ones, b)
            let q := p
            for { let end := add(p, shl(5, shr(5, n))) } lt(q, end) { q := add(q, 32) } {
                let x := xor(mload(q), bb)
                let c := shr(248, mul(shr(7, and(not(or(add(and(x, low), low), x)), mul(ones, 0x80))), ones))
                if gt(c, need) { break }
                need := sub(need, c)
            }
            for { let e := add(p, n) } lt(q, e) { q := add(q, 1) } {
                if eq(byte(0, mload(q)), b) {
                    if iszero(need) {
                        pos := sub(q, p)
                        break
                    }
                    need := sub(need, 1)
                }
            }
        }
    }

    function _layernormOut(LD.Desc memory D, LD.TType memory x, LD.TType memory g, uint256 mode)
        private
        pure
        returns (LD.TType memory)
    {
        _need(mode == LD.MODE_PER_TENSOR, LD.R_REQUANT);
        _need(D.a[LD.A_RMS] <= 1, LD.R_ATTR);
        _need(D.ins[2].kind == LD.KIND_WEIGHT, LD.R_INPUT_TYPE);
        uint256 dd = x.dims[x.rank - 1];
        _need(x.dtype == LD.DT_INT8 && x.rank >= 2 && LD._is(g, LD.DT_INT8, dd, 1, 1)
            && LD._is(D.ins[2].t, LD.DT_INT32, dd, 1, 1), LD.R_INPUT_TYPE);
        // eps * D^3 <= 2^61 keeps V below 2^62 (rules.MAX_LN_EPS_TERM)
        _need(uint256(D.a[LD.A_EPS]) * dd * dd * dd <= 1 << 61, LD.R_ATTR);
        return x;
    }

    /// @notice LayerNorm / RMSNorm element i (reference.layernorm_z, docs/protocol.md 2.2.2): one
    ///         scan gives s1 = sum v and s2 = sum v^2 (v = x - x_zp); Q = sum (D v - T)^2 =
    ///         D^2 s2 - D T^2 with T = s1 (RMSNorm: T = 0); sigma = isqrt(Q + eps D^3);
    ///         z = floor((2 c rD + sigma) / (2 sigma)), c = D v_k - T, rD = isqrt(D 2^24);
    ///         y = requant(wrap32(z * gamma[k] + beta[k])).
    function _layernorm(LD.Desc memory D, uint256 i, LibInt8Ops.Range[] memory r) private pure returns (int256) {
        int256[10] memory a = D.a;
        uint256 dd = D.out.dims[D.out.rank - 1];
        (int256 s1, int256 s2) = _sums(r[0].ptr, dd, a[LD.A_XZP]);
        int256 d = int256(dd);
        int256 t = a[LD.A_RMS] == 1 ? int256(0) : s1;
        // Q < 2^58, eps D^3 <= 2^61: V < 2^62, non-negative
        uint256 sigma = Math.sqrt(uint256(d * d * s2 - d * t * t + a[LD.A_EPS] * d * d * d));
        int256 z = 0; // sigma = 0 (a constant row with eps 0): the normalized value 0
        if (sigma != 0) {
            int256 c = d * (LibInt8Ops._i8(r[0].ptr + i % dd) - a[LD.A_XZP]) - t;
            int256 num = 2 * c * int256(Math.sqrt(dd << 24)) + int256(sigma);
            int256 den = 2 * int256(sigma);
            z = num / den;
            if (num % den != 0 && num < 0) --z; // floor, not truncation
        }
        int256 acc = LibInt8Ops._wrap32(z * LibInt8Ops._i8(r[1].ptr) + LibInt8Ops._i32(r[2].ptr));
        return LibInt8Ops._requant(a, acc, 0);
    }

    /// @dev sum (x - zp) and sum (x - zp)^2 over the n int8 at memory address p (|.| < 2^40):
    ///      sum x word-wise (_sumI8), sum x^2 with the 32 bytes of each word unrolled, then
    ///      sum (x - zp)^2 = sum x^2 - 2 zp sum x + n zp^2.
    function _sums(uint256 p, uint256 n, int256 zp) private pure returns (int256 s1, int256 s2) {
        int256 sx = _sumI8(p, n);
        int256 q;
        // SAFETY: reads [p, p + n), the opened row; memory-safe. q <= 2^14 * 2^14: no overflow.
        assembly ("memory-safe") {
            let v := 0
            let end := add(p, shl(5, shr(5, n)))
            for {} lt(p, end) { p := add(p, 32) } {
                let w := mload(p)
                v := signextend(0, byte(0, w))
                q := add(q, mul(v, v))
                v := signextend(0, byte(1, w))
                q := add(q, mul(v, v))
                v := signextend(0, byte(2, w))
                q := add(q, mul(v, v))
                v := signextend(0, byte(3, w))
                q := add(q, mul(v, v))
                v := signextend(0, byte(4, w))
                q := add(q, mul(v, v))
                v := signextend(0, byte(5, w))
                q := add(q, mul(v, v))
                v := signextend(0, byte(6, w))
                q := add(q, mul(v, v))
                v := signextend(0, byte(7, w))
                q := add(q, mul(v, v))
                v := signextend(0, byte(8, w))
                q := add(q, mul(v, v))
                v := signextend(0, byte(9, w))
                q := add(q, mul(v, v))
                v := signextend(0, byte(10, w))
                q := add(q, mul(v, v))
                v := signextend(0, byte(11, w))
                q := add(q, mul(v, v))
                v := signextend(0, byte(12, w))
                q := add(q, mul(v, v))
                v := signextend(0, byte(13, w))
                q := add(q, mul(v, v))
                v := signextend(0, byte(14, w))
                q := add(q, mul(v, v))
                v := signextend(0, byte(15, w))
                q := add(q, mul(v, v))
                v := signextend(0, byte(16, w))
                q := add(q, mul(v, v))
                v := signextend(0, byte(17, w))
                q := add(q, mul(v, v))
                v := signextend(0, byte(18, w))
                q := add(q, mul(v, v))
                v := signextend(0, byte(19, w))
                q := add(q, mul(v, v))
                v := signextend(0, byte(20, w))
                q := add(q, mul(v, v))
                v := signextend(0, byte(21, w))
                q := add(q, mul(v, v))
                v := signextend(0, byte(22, w))
                q := add(q, mul(v, v))
                v := signextend(0, byte(23, w))
                q := add(q, mul(v, v))
                v := signextend(0, byte(24, w))
                q := add(q, mul(v, v))
                v := signextend(0, byte(25, w))
                q := add(q, mul(v, v))
                v := signextend(0, byte(26, w))
                q := add(q, mul(v, v))
                v := signextend(0, byte(27, w))
                q := add(q, mul(v, v))
                v := signextend(0, byte(28, w))
                q := add(q, mul(v, v))
                v := signextend(0, byte(29, w))
                q := add(q, mul(v, v))
                v := signextend(0, byte(30, w))
                q := add(q, mul(v, v))
                v := signextend(0, byte(31, w))
                q := add(q, mul(v, v))
            }
            for { let e := add(end, and(n, 31)) } lt(p, e) { p := add(p, 1) } {
                v := signextend(0, byte(0, mload(p)))
                q := add(q, mul(v, v))
            }
        }
        int256 ni = int256(n);
        s1 = sx - ni * zp;
        s2 = q - 2 * zp * sx + ni * zp * zp;
    }

    /// @dev e(d) of softmax's table at `tab`: 2^15 for d = 0, else T[d] clamped to [0, 2^15].
    function _exp(uint256 tab, uint256 d) private pure returns (uint256) {
        if (d == 0) return 1 << 15;
        int256 v = LibInt8Ops._i32(tab + 4 * d);
        return v < 0 ? 0 : v > 32768 ? 32768 : uint256(v);
    }

    /// @dev Sum of the k int8 at memory address p. Whole words as _dot sums its lanes: u = v XOR
    ///      0x80 = v + 128 per byte, 16 lanes of 16 bits (<= 510 each) folded by one multiply, then
    ///      sum v = sum u - 128 * 32 per word; the tail byte by byte.
    function _sumI8(uint256 p, uint256 k) private pure returns (int256 acc) {
        // SAFETY: reads [p, p + k), the opened row; memory-safe. |acc| <= 128 * 2^15: no overflow.
        assembly ("memory-safe") {
            let flip := 0x8080808080808080808080808080808080808080808080808080808080808080
            let lo8 := 0x00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff
            let ones := 0x0001000100010001000100010001000100010001000100010001000100010001
            let end := add(p, shl(5, shr(5, k)))
            for {} lt(p, end) { p := add(p, 32) } {
                let u := xor(mload(p), flip)
                acc := add(acc, sub(shr(240, mul(add(and(u, lo8), and(shr(8, u), lo8)), ones)), 4096))
            }
            for { let e := add(end, and(k, 31)) } lt(p, e) { p := add(p, 1) } {
                acc := add(acc, signextend(0, byte(0, mload(p))))
            }
        }
    }

    /// @dev sum_j (x[j*sx] - zx) * (w[j*sw] - zw) over k int8 pairs from memory addresses xp, wp.
    function _dotStrided(uint256 xp, uint256 sx, uint256 wp, uint256 sw, uint256 k, int256 zx, int256 zw)
        private
        pure
        returns (int256 acc)
    {
        // SAFETY: reads the two opened ranges only: x at xp + j*sx and w at wp + j*sw for j < k,
        // whose last bytes are the ranges' last bytes; memory-safe. |acc| < 2^31: no overflow.
        assembly ("memory-safe") {
            for { let e := add(xp, mul(k, sx)) } lt(xp, e) {
                xp := add(xp, sx)
                wp := add(wp, sw)
            } {
                let xv := sub(signextend(0, byte(0, mload(xp))), zx)
                acc := add(acc, mul(xv, sub(signextend(0, byte(0, mload(wp))), zw)))
            }
        }
    }
}
