// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Int8Errors} from "./Int8Errors.sol";
import {LibDescriptor as LD} from "./LibDescriptor.sol";

/// @title LibInt8Ops
/// @notice The scalar semantics of the v1 op set for ONE output element (docs/protocol.md 2):
///         the twin of gpumesh.client.core.ops.reference. `ranges` names the input byte ranges
///         the element reads (element_ranges, same order); `compute` evaluates it from those bytes
///         (compute_element), reading each range through a memory pointer set by the proof check.
/// @dev Pure; imported by Int8Verifier. Arithmetic in int256: products and sums of the op set stay
///      far below 2^255 (ops.md 2.1), so the only wrap-around is the explicit wrap32 of linear.
///      `>>` on int256 is an arithmetic shift (floor), exactly rshift of ops.md.
library LibInt8Ops {
    /// @notice Bytes [start, end) of input `input`; `ptr` is the memory address of byte `start`
    ///         once its range proof has been checked.
    struct Range {
        uint256 input;
        uint256 start;
        uint256 end;
        uint256 ptr;
    }

    // ================================================================ which bytes

    /// @notice The input byte ranges output element `i` needs (element_ranges). The caller has
    ///         checked i < count(out).
    function ranges(LD.Desc memory D, uint256 i) internal pure returns (Range[] memory r) {
        uint256 op = D.opcode;
        LD.TType memory x = D.ins[0].t;
        uint256 wx = LD.width(x);
        if (op == LD.OP_LINEAR) {
            uint256 k = x.dims[x.rank - 1];
            uint256 nn = D.out.dims[D.out.rank - 1];
            // slither-disable-next-line divide-before-multiply -- row/block index: floor(i / n) * width is the intended start
            (uint256 m, uint256 n) = (i / nn, i % nn);
            r = new Range[](D.ins.length);
            // slither-disable-next-line divide-before-multiply -- row/block index: floor(i / n) * width is the intended start
            r[0] = Range(0, m * k, (m + 1) * k, 0);
            r[1] = Range(1, n * k, (n + 1) * k, 0);
            r[2] = Range(2, 4 * n, 4 * n + 4, 0);
            if (D.ins.length == 4) r[3] = Range(3, 8 * n, 8 * n + 8, 0);
        } else if (op == LD.OP_REQUANT) {
            r = new Range[](D.ins.length);
            r[0] = Range(0, 4 * i, 4 * i + 4, 0);
            if (D.ins.length == 2) {
                uint256 c = i % x.dims[x.rank - 1];
                r[1] = Range(1, 8 * c, 8 * c + 8, 0);
            }
        } else if (op == LD.OP_ADD) {
            r = new Range[](2);
            r[0] = Range(0, i, i + 1, 0);
            r[1] = Range(1, i, i + 1, 0);
        } else if (op == LD.OP_IM2COL) {
            r = _im2colRange(D, x, i);
        } else if (op == LD.OP_MAXPOOL) {
            r = _maxpoolRanges(D, x, i);
        } else if (op == LD.OP_AVGPOOL) {
            uint256 block_ = x.dims[1] * x.dims[2] * x.dims[3];
            // slither-disable-next-line divide-before-multiply -- row/block index: floor(i / n) * width is the intended start
            uint256 n = i / x.dims[3];
            r = new Range[](1);
            // slither-disable-next-line divide-before-multiply -- row/block index: floor(i / n) * width is the intended start
            r[0] = Range(0, n * block_, (n + 1) * block_, 0);
        } else if (op == LD.OP_ARGMAX) {
            uint256 row = x.dims[x.rank - 1] * wx;
            r = new Range[](1);
            r[0] = Range(0, i * row, (i + 1) * row, 0);
        } else if (op == LD.OP_TRANSPOSE || op >= LD.OP_CONCAT) {
            (uint256 k, uint256 j) = _viewSource(D, x, i);
            r = new Range[](1);
            r[0] = Range(k, j * wx, (j + 1) * wx, 0);
        } else if (op >= LD.OP_CHUNKMAX) {
            r = new Range[](1);
            r[0] = _chunkRange(D, x, i);
        } else {
            // relu, reshape: the same element of the one input
            r = new Range[](1);
            r[0] = Range(0, i * wx, (i + 1) * wx, 0);
        }
    }

    /// @dev The one range of a chunked reduction's element i (reference.element_ranges).
    function _chunkRange(LD.Desc memory D, LD.TType memory x, uint256 i) private pure returns (Range memory) {
        uint256 op = D.opcode;
        if (op == LD.OP_PAIRARGMAX) {
            uint256 row = 8 * x.dims[x.rank - 2];
            return Range(0, i * row, (i + 1) * row, 0);
        }
        if (op == LD.OP_SUMREQUANT) {
            uint256 row = 4 * x.dims[x.rank - 1];
            return Range(0, i * row, (i + 1) * row, 0);
        }
        (uint256 k, uint256 q, uint256 g) = LD.chunkGeometry(D);
        if (op == LD.OP_CHUNKMAX) {
            // element (row, g, j): chunk g of the row; values of the input's width, or 8-byte pairs
            uint256 size = D.a[LD.A_PAIRS] == 1 ? 8 : LD.width(x);
            // slither-disable-next-line divide-before-multiply -- row index: floor(i / 2G) * K is the intended start
            uint256 row = i / (2 * g);
            uint256 s = (i / 2) % g * q;
            uint256 e = _min(s + q, k);
            // slither-disable-next-line divide-before-multiply -- row/chunk index times the row/chunk length
            return Range(0, (row * k + s) * size, (row * k + e) * size, 0);
        }
        // chunksum element (n, c, g): positions [g*q, min((g+1)*q, H*W)) of channel c, strided by C
        uint256 c = x.dims[3];
        // slither-disable-next-line divide-before-multiply -- sample index: floor(i / (C*G)) * H*W is the intended start
        uint256 n = i / (c * g);
        uint256 ci = (i / g) % c;
        uint256 s0 = (i % g) * q;
        uint256 e0 = _min(s0 + q, k);
        // slither-disable-next-line divide-before-multiply -- sample index times the sample's H*W positions
        return Range(0, (n * k + s0) * c + ci, (n * k + e0 - 1) * c + ci + 1, 0);
    }

    function _min(uint256 a, uint256 b) private pure returns (uint256) {
        return a < b ? a : b;
    }

    /// @dev (n, oh, ow, last) of output element i (out is [N, OH, OW, *]).
    function _nhwc(LD.TType memory o, uint256 i) private pure returns (uint256 n, uint256 oh, uint256 ow, uint256 c) {
        c = i % o.dims[3];
        i /= o.dims[3];
        ow = i % o.dims[2];
        i /= o.dims[2];
        oh = i % o.dims[1];
        n = i / o.dims[1];
    }

    function _im2colRange(LD.Desc memory D, LD.TType memory x, uint256 i) private pure returns (Range[] memory r) {
        (uint256 n, uint256 oh, uint256 ow, uint256 col) = _nhwc(D.out, i);
        // col = (kh*KW + kw)*C + c
        (int256 ih, int256 iw) = _im2colSource(D, oh, ow, col / x.dims[3]);
        if (ih >= 0 && ih < int256(x.dims[1]) && iw >= 0 && iw < int256(x.dims[2])) {
            uint256 j = ((n * x.dims[1] + uint256(ih)) * x.dims[2] + uint256(iw)) * x.dims[3] + col % x.dims[3];
            r = new Range[](1);
            r[0] = Range(0, j, j + 1, 0);
        } else {
            r = new Range[](0); // padding: the element is the `pad` attribute
        }
    }

    /// @dev Input row and column (possibly outside the image) of kernel position kk = kh*KW + kw.
    function _im2colSource(LD.Desc memory D, uint256 oh, uint256 ow, uint256 kk)
        private
        pure
        returns (int256 ih, int256 iw)
    {
        int256 kw = D.a[LD.A_KW];
        ih = int256(oh) * D.a[LD.A_SH] - D.a[LD.A_PH] + int256(kk) / kw;
        iw = int256(ow) * D.a[LD.A_SW] - D.a[LD.A_PW] + int256(kk) % kw;
    }

    function _maxpoolRanges(LD.Desc memory D, LD.TType memory x, uint256 i) private pure returns (Range[] memory r) {
        (uint256 n, uint256 oh, uint256 ow, uint256 ci) = _nhwc(D.out, i);
        int256[4] memory w; // columns [w0, w1] and rows [w2, w3] of the window inside the image
        (w[0], w[1]) = _span(ow, D.a[LD.A_SW], D.a[LD.A_PW], D.a[LD.A_KW], int256(x.dims[2]));
        (w[2], w[3]) = _span(oh, D.a[LD.A_SH], D.a[LD.A_PH], D.a[LD.A_KH], int256(x.dims[1]));
        if (w[0] > w[1] || w[2] > w[3]) return new Range[](0);
        // One range per row ih in [w2, w3]: the same rows, in the same order, as the reference's
        // loop over kh (bounded by H, not by the u16 kernel size).
        r = new Range[](uint256(w[3] - w[2] + 1));
        _fillRows(r, x, n * x.dims[1] + uint256(w[2]), ci, w);
    }

    function _fillRows(Range[] memory r, LD.TType memory x, uint256 row0, uint256 ci, int256[4] memory w)
        private
        pure
    {
        uint256 c = x.dims[3];
        for (uint256 q = 0; q < r.length; ++q) {
            uint256 base = (row0 + q) * x.dims[2];
            r[q] = Range(0, (base + uint256(w[0])) * c + ci, (base + uint256(w[1])) * c + ci + 1, 0);
        }
    }

    /// @dev Input positions [lo, hi] (inclusive) of a window at output position o, clipped to
    ///      [0, size): o*s - p + [0, k).
    function _span(uint256 o, int256 s, int256 p, int256 k, int256 size) private pure returns (int256 lo, int256 hi) {
        int256 start = int256(o) * s - p;
        lo = start > 0 ? start : int256(0);
        hi = (start + k < size ? start + k : size) - 1;
    }

    /// @dev (input, flat input index) read by transpose, concat or slice element i: the output
    ///      multi-index o lands at p (transpose: p[perm[d]] = o[d]; else p = o), then on the axis
    ///      slice reads p[axis] + start of x, concat p[axis] of x below x[axis], else p[axis] -
    ///      x[axis] of y (reference.element_ranges, view_source); j ravels p in that input's dims.
    function _viewSource(LD.Desc memory D, LD.TType memory x, uint256 i) private pure returns (uint256 k, uint256 j) {
        uint256 r = x.rank;
        uint256 op = D.opcode;
        uint256[4] memory p = [uint256(0), 0, 0, 0];
        for (uint256 d = r; d > 0; --d) {
            p[op == LD.OP_TRANSPOSE ? uint256(D.a[d - 1]) : d - 1] = i % D.out.dims[d - 1];
            i /= D.out.dims[d - 1];
        }
        if (op != LD.OP_TRANSPOSE) {
            uint256 axis = uint256(D.a[LD.A_AXIS]);
            if (op == LD.OP_SLICE) {
                p[axis] += uint256(D.a[LD.A_START]);
            } else if (p[axis] >= x.dims[axis]) {
                p[axis] -= x.dims[axis];
                (k, x) = (1, D.ins[1].t);
            }
        }
        for (uint256 d = 0; d < r; ++d) {
            j = j * x.dims[d] + p[d];
        }
    }

    // ================================================================ the value

    /// @notice Output element `i` from the opened ranges (compute_element).
    function compute(LD.Desc memory D, uint256 i, Range[] memory r) internal pure returns (int256) {
        uint256 op = D.opcode;
        int256[10] memory a = D.a;
        if (op == LD.OP_LINEAR) {
            uint256 k = r[0].end - r[0].start;
            int256 acc = _wrap32(_dot(r[0].ptr, r[1].ptr, k, a[LD.A_XZP]) + _i32(r[2].ptr));
            if (a[LD.A_MODE] == int256(LD.MODE_NONE)) return acc;
            return _requant(a, acc, r.length == 4 ? r[3].ptr : 0);
        }
        if (op == LD.OP_REQUANT) return _requant(a, _i32(r[0].ptr), r.length == 2 ? r[1].ptr : 0);
        if (op == LD.OP_ADD) {
            int256 t = (_i8(r[0].ptr) - a[0]) * a[2] + (_i8(r[1].ptr) - a[1]) * a[3];
            return _clamp(_roundShift(t, a[4]) + a[5], a[6], a[7]);
        }
        if (op == LD.OP_RELU) {
            int256 v = _i8(r[0].ptr);
            return v > a[0] ? v : a[0];
        }
        if (op == LD.OP_IM2COL) return r.length == 1 ? _i8(r[0].ptr) : a[LD.A_PAD];
        if (op == LD.OP_MAXPOOL) return _maxpool(r, D.ins[0].t.dims[3]);
        if (op == LD.OP_AVGPOOL) return _avgpool(D, i, r[0]);
        if (op == LD.OP_ARGMAX) return int256(_argmax(r[0], LD.width(D.ins[0].t), 4));
        if (op >= LD.OP_CHUNKMAX && op < LD.OP_CONCAT) return _chunked(D, i, r[0]);
        // reshape, transpose, concat, slice: the input element itself
        return LD.width(D.ins[0].t) == 1 ? _i8(r[0].ptr) : _i32(r[0].ptr);
    }

    /// @dev chunkmax, pairargmax, chunksum, sumrequant from their one range (compute_element).
    function _chunked(LD.Desc memory D, uint256 i, Range memory r) private pure returns (int256) {
        uint256 op = D.opcode;
        if (op == LD.OP_SUMREQUANT) return _requant(D.a, _wrap32(_sumI32(r.ptr, r.end - r.start)), 0);
        if (op == LD.OP_CHUNKSUM) {
            // sum(v - zp) over the chunk's positions = sum(v) - positions * zp
            uint256 c = D.ins[0].t.dims[3];
            uint256 n = r.end - r.start;
            return _sumStrided(r.ptr, n, c) - int256((n + c - 1) / c) * D.a[LD.A_XZP];
        }
        if (op == LD.OP_PAIRARGMAX || D.a[LD.A_PAIRS] == 1) {
            // pairs (value, index): the first pair with the greatest value
            uint256 p = r.ptr + 8 * _argmax(r, 4, 8);
            if (op == LD.OP_PAIRARGMAX || i % 2 == 1) return _i32(p + 4);
            return _i32(p);
        }
        uint256 w = LD.width(D.ins[0].t);
        uint256 k = _argmax(r, w, w);
        if (i % 2 == 1) {
            // chunk g = (i / 2) % G (out is [.., G, 2]) starts at g*q; k is the position inside it
            uint256 g = D.out.dims[D.out.rank - 2];
            return int256((i / 2) % g * uint256(D.a[LD.A_Q]) + k);
        }
        return w == 1 ? _i8(r.ptr + k) : _i32(r.ptr + 4 * k);
    }

    /// @dev Sum of the int8 at p, p + c, ... below p + n (c >= 1).
    function _sumStrided(uint256 p, uint256 n, uint256 c) internal pure returns (int256 acc) {
        // SAFETY: reads the opened range only (p .. p + n), every c-th byte; memory-safe. int256
        // sum of at most 2^28 int8 values: no overflow.
        assembly ("memory-safe") {
            for { let e := add(p, n) } lt(p, e) { p := add(p, c) } {
                acc := add(acc, signextend(0, byte(0, mload(p))))
            }
        }
    }

    /// @dev Exact sum of the little-endian int32 values in [p, p + n) (n a multiple of 4).
    function _sumI32(uint256 p, uint256 n) private pure returns (int256 acc) {
        // SAFETY: reads the opened range only; memory-safe. At most 2^26 int32 values: no overflow.
        assembly ("memory-safe") {
            for { let e := add(p, n) } lt(p, e) { p := add(p, 4) } {
                let b := shr(224, mload(p))
                acc := add(acc, signextend(3, or(or(shl(24, and(b, 0xff)), shl(8, and(b, 0xff00))), or(and(shr(8, b), 0xff00), shr(24, b)))))
            }
        }
    }

    function _maxpool(Range[] memory r, uint256 c) private pure returns (int256 best) {
        // Out-of-range window positions read -128 (ops.md), so -128 is the empty window's value.
        best = -128;
        for (uint256 q = 0; q < r.length; ++q) {
            best = _maxStrided(r[q].ptr, r[q].end - r[q].start, c, best);
        }
    }

    /// @dev max(best, int8 at p, p + c, ... below p + n): one window row (c >= 1).
    function _maxStrided(uint256 p, uint256 n, uint256 c, int256 best) private pure returns (int256 m) {
        m = best;
        // SAFETY: reads the opened range only (p .. p + n); memory-safe.
        assembly ("memory-safe") {
            for { let e := add(p, n) } lt(p, e) { p := add(p, c) } {
                let v := signextend(0, byte(0, mload(p)))
                if sgt(v, m) { m := v }
            }
        }
    }

    function _avgpool(LD.Desc memory D, uint256 i, Range memory r) private pure returns (int256) {
        uint256 c = D.ins[0].t.dims[3];
        uint256 n = r.end - r.start;
        int256 acc = _sumStrided(r.ptr + i % c, n - i % c, c);
        // sum(v - zp) over H*W values = sum(v) - H*W*zp
        acc -= int256(n / c) * D.a[LD.A_XZP];
        return _requant(D.a, acc, 0);
    }

    /// @dev Position of the first maximal element of the range: int8 (w = 1), or an int32 value
    ///      every `stride` bytes (w = 4; stride 4 for int32 values, 8 for (value, index) pairs).
    function _argmax(Range memory r, uint256 w, uint256 stride) private pure returns (uint256 best) {
        uint256 p = r.ptr;
        uint256 e = r.end - r.start + p;
        // SAFETY: reads the n elements of the opened range only (p .. e); memory-safe.
        // Strict comparison: the first maximal index wins ties.
        assembly ("memory-safe") {
            switch w
            case 1 {
                let top := signextend(0, byte(0, mload(p)))
                for { let q := add(p, 1) } lt(q, e) { q := add(q, 1) } {
                    let v := signextend(0, byte(0, mload(q)))
                    if sgt(v, top) {
                        top := v
                        best := sub(q, p)
                    }
                }
            }
            default {
                // int32 little-endian: compare the byte-swapped words as signed 32-bit values
                let b := shr(224, mload(p))
                let top := signextend(3, or(or(shl(24, and(b, 0xff)), shl(8, and(b, 0xff00))), or(and(shr(8, b), 0xff00), shr(24, b))))
                for { let q := add(p, stride) } lt(q, e) { q := add(q, stride) } {
                    b := shr(224, mload(q))
                    let v := signextend(3, or(or(shl(24, and(b, 0xff)), shl(8, and(b, 0xff00))), or(and(shr(8, b), 0xff00), shr(24, b))))
                    if sgt(v, top) {
                        top := v
                        best := div(sub(q, p), stride)
                    }
                }
            }
        }
    }

    // ================================================================ arithmetic (ops.md 2.1)

    function _wrap32(int256 v) internal pure returns (int256) {
        return int256(int32(uint32(uint256(v))));
    }

    function _clamp(int256 v, int256 lo, int256 hi) private pure returns (int256) {
        return v < lo ? lo : v > hi ? hi : v;
    }

    /// @dev floor((v + 2^(shift-1)) / 2^shift): round half up; shift in [1, 62] (validated).
    function _roundShift(int256 v, int256 shift) private pure returns (int256) {
        return (v + (int256(1) << uint256(shift - 1))) >> uint256(shift);
    }

    /// @dev requant(acc) with the per-tensor parameters, or row (mult, shift) at `qp` (mode 2).
    function _requant(int256[10] memory a, int256 acc, uint256 qp) internal pure returns (int256) {
        int256 mult = a[LD.A_MULT];
        int256 shift = a[LD.A_SHIFT];
        if (a[LD.A_MODE] == int256(LD.MODE_PER_CHANNEL)) {
            mult = _i32(qp);
            shift = _i32(qp + 4);
            if (mult < 0 || shift < 1 || shift > 62) revert Int8Errors.Int8Verifier_BadChannelParams(mult, shift);
        }
        return _clamp(_roundShift(acc * mult, shift) + a[LD.A_ZP], a[LD.A_LO], a[LD.A_HI]);
    }

    /// @dev Signed int8 at memory address p.
    function _i8(uint256 p) internal pure returns (int256 v) {
        assembly ("memory-safe") {
            v := signextend(0, byte(0, mload(p)))
        }
    }

    /// @dev Signed little-endian int32 at memory address p.
    function _i32(uint256 p) internal pure returns (int256 v) {
        assembly ("memory-safe") {
            let b := shr(224, mload(p)) // b0 b1 b2 b3 as a big-endian word
            let le := or(or(shl(24, and(b, 0xff)), shl(8, and(b, 0xff00))), or(and(shr(8, b), 0xff00), shr(24, b)))
            v := signextend(3, le)
        }
    }

    /// @notice sum_k (x[k] - zp) * w[k] over k int8 pairs at memory addresses xp, wp.
    /// @dev Hot loop of the linear one-step (K up to 65536). Whole 32-byte words: flip each lane's
    ///      sign bit (XOR 0x80) to get u = v + 128 in [0, 255], then
    ///      sum x*w = sum ux*uw - 128*(sum ux + sum uw) + 16384*n  (n lanes),
    ///      so a lane costs byte, byte, mul, add; the lane sums of ux and uw are SWAR (16-bit lanes
    ///      folded by one multiply). The tail (< 32 pairs) runs on signed bytes.
    function _dot(uint256 xp, uint256 wp, uint256 k, int256 zp) internal pure returns (int256 acc) {
        assembly ("memory-safe") {
            let flip := 0x8080808080808080808080808080808080808080808080808080808080808080
            let lo8 := 0x00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff
            let ones := 0x0001000100010001000100010001000100010001000100010001000100010001
            let words := shr(5, k)
            let end := add(xp, shl(5, words))
            let prod := 0 // sum ux*uw
            let sux := 0 // sum ux
            let suw := 0 // sum uw
            for {} lt(xp, end) {
                xp := add(xp, 32)
                wp := add(wp, 32)
            } {
                let ux := xor(mload(xp), flip)
                let uw := xor(mload(wp), flip)
                // 16 lanes of 16 bits hold pairs of bytes (<= 510 each); their total (<= 8160)
                // lands in the top 16 bits of the product with `ones` (mod 2^256 drops the rest).
                sux := add(sux, shr(240, mul(add(and(ux, lo8), and(shr(8, ux), lo8)), ones)))
                suw := add(suw, shr(240, mul(add(and(uw, lo8), and(shr(8, uw), lo8)), ones)))
                prod := add(prod, mul(byte(0, ux), byte(0, uw)))
                prod := add(prod, mul(byte(1, ux), byte(1, uw)))
                prod := add(prod, mul(byte(2, ux), byte(2, uw)))
                prod := add(prod, mul(byte(3, ux), byte(3, uw)))
                prod := add(prod, mul(byte(4, ux), byte(4, uw)))
                prod := add(prod, mul(byte(5, ux), byte(5, uw)))
                prod := add(prod, mul(byte(6, ux), byte(6, uw)))
                prod := add(prod, mul(byte(7, ux), byte(7, uw)))
                prod := add(prod, mul(byte(8, ux), byte(8, uw)))
                prod := add(prod, mul(byte(9, ux), byte(9, uw)))
                prod := add(prod, mul(byte(10, ux), byte(10, uw)))
                prod := add(prod, mul(byte(11, ux), byte(11, uw)))
                prod := add(prod, mul(byte(12, ux), byte(12, uw)))
                prod := add(prod, mul(byte(13, ux), byte(13, uw)))
                prod := add(prod, mul(byte(14, ux), byte(14, uw)))
                prod := add(prod, mul(byte(15, ux), byte(15, uw)))
                prod := add(prod, mul(byte(16, ux), byte(16, uw)))
                prod := add(prod, mul(byte(17, ux), byte(17, uw)))
                prod := add(prod, mul(byte(18, ux), byte(18, uw)))
                prod := add(prod, mul(byte(19, ux), byte(19, uw)))
                prod := add(prod, mul(byte(20, ux), byte(20, uw)))
                prod := add(prod, mul(byte(21, ux), byte(21, uw)))
                prod := add(prod, mul(byte(22, ux), byte(22, uw)))
                prod := add(prod, mul(byte(23, ux), byte(23, uw)))
                prod := add(prod, mul(byte(24, ux), byte(24, uw)))
                prod := add(prod, mul(byte(25, ux), byte(25, uw)))
                prod := add(prod, mul(byte(26, ux), byte(26, uw)))
                prod := add(prod, mul(byte(27, ux), byte(27, uw)))
                prod := add(prod, mul(byte(28, ux), byte(28, uw)))
                prod := add(prod, mul(byte(29, ux), byte(29, uw)))
                prod := add(prod, mul(byte(30, ux), byte(30, uw)))
                prod := add(prod, mul(byte(31, ux), byte(31, uw)))
            }
            let n := shl(5, words)
            // sum x*w and sum w over the whole words (two's complement int256 arithmetic)
            let sxw := add(sub(prod, shl(7, add(sux, suw))), shl(14, n))
            let sw := sub(suw, shl(7, n))
            for { let tailEnd := add(xp, sub(k, n)) } lt(xp, tailEnd) {
                xp := add(xp, 1)
                wp := add(wp, 1)
            } {
                let wv := signextend(0, byte(0, mload(wp)))
                sxw := add(sxw, mul(signextend(0, byte(0, mload(xp))), wv))
                sw := add(sw, wv)
            }
            // sum (x - zp) * w = sum x*w - zp * sum w
            acc := sub(sxw, mul(zp, sw))
        }
    }
}
