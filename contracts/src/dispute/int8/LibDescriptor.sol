// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Int8Errors} from "./Int8Errors.sol";
import {Constants} from "../../libraries/Constants.sol";

/// @title LibDescriptor
/// @notice Decodes and validates one v1 op descriptor (docs/protocol.md 3.2-3.4): the Solidity
///         twin of gpumesh.client.core.ops.types.OpDescriptor.decode + rules.check_descriptor.
///         A descriptor the Python validator rejects reverts here (Int8Verifier_BadDescriptor with
///         a reason code); one it accepts decodes to the same fields.
/// @dev Pure; imported by Int8Verifier and LibInt8Ops. Integers are big-endian fixed width, signed
///      fields two's complement of their width. Attributes land in `Desc.a` at fixed positions per
///      opcode (A_* below), so the op code reads them without re-parsing.
library LibDescriptor {
    // ------------------------------------------------------------------ opcodes and codes
    uint256 internal constant OP_LINEAR = 0x01;
    uint256 internal constant OP_REQUANT = 0x02;
    uint256 internal constant OP_ADD = 0x03;
    uint256 internal constant OP_RELU = 0x04;
    uint256 internal constant OP_IM2COL = 0x05;
    uint256 internal constant OP_MAXPOOL = 0x06;
    uint256 internal constant OP_AVGPOOL = 0x07;
    uint256 internal constant OP_ARGMAX = 0x08;
    uint256 internal constant OP_RESHAPE = 0x09;
    uint256 internal constant OP_TRANSPOSE = 0x0A;
    // Chunked reductions (docs/protocol.md 2.2, 5.7.7).
    uint256 internal constant OP_CHUNKMAX = 0x0B;
    uint256 internal constant OP_PAIRARGMAX = 0x0C;
    uint256 internal constant OP_CHUNKSUM = 0x0D;
    uint256 internal constant OP_SUMREQUANT = 0x0E;
    // Integer transformer ops (docs/protocol.md 2.2, issue #13).
    uint256 internal constant OP_MATMUL = 0x0F;
    uint256 internal constant OP_LUT = 0x10;
    uint256 internal constant OP_MUL = 0x11;
    uint256 internal constant OP_GATHER = 0x12;
    uint256 internal constant OP_SOFTMAX = 0x13;
    uint256 internal constant OP_LAYERNORM = 0x14;
    uint256 internal constant OP_ROPE = 0x15;
    uint256 internal constant OP_TOPK = 0x16;
    // Views (docs/protocol.md 2.2.5): verified by Int8Verifier itself, like reshape and transpose.
    uint256 internal constant OP_CONCAT = 0x17;
    uint256 internal constant OP_SLICE = 0x18;
    uint256 internal constant OP_LAST = OP_SLICE;

    uint256 internal constant DT_INT8 = 1;
    uint256 internal constant DT_INT32 = 2;

    uint256 internal constant KIND_WEIGHT = 0;
    uint256 internal constant KIND_UNIT_INPUT = 1;
    uint256 internal constant KIND_OP_OUTPUT = 2;

    uint256 internal constant MODE_NONE = 0;
    uint256 internal constant MODE_PER_TENSOR = 1;
    uint256 internal constant MODE_PER_CHANNEL = 2;

    uint256 internal constant SLOT_BYTES = 23;
    uint256 internal constant TTYPE_BYTES = 18;

    // Limits of docs/protocol.md 3.4 (gpumesh.client.core.ops.rules).
    uint256 internal constant MAX_TENSOR_BYTES = 1 << 28;
    // What ONE output element's one-step may read, so that the worst valid step of every op fits
    // a transaction (docs/protocol.md 5.7.5): leaves opened (per range: the leaves it can touch at
    // the worst alignment + one for its sibling path, rangeLeaves), input elements scanned one by
    // one (maxpool window inside the image, avgpool H*W, argmax row), linear's K.
    uint256 internal constant MAX_STEP_LEAVES = 96;
    uint256 internal constant MAX_STEP_ELEMENTS = 1 << 14;
    uint256 internal constant MAX_K = 1 << 15;
    // Rows of a gather table (rules.MAX_GATHER_ROWS).
    uint256 internal constant MAX_GATHER_ROWS = 1 << 17;
    int256 internal constant MAX_MULT = 2 ** 31 - 1;

    // Int8Verifier_BadDescriptor reasons.
    uint8 internal constant R_LENGTH = 1;
    uint8 internal constant R_OPCODE = 2;
    uint8 internal constant R_SLOT = 3;
    uint8 internal constant R_TYPE = 4;
    uint8 internal constant R_REQUANT = 5;
    uint8 internal constant R_INPUT_COUNT = 6;
    uint8 internal constant R_INPUT_TYPE = 7;
    uint8 internal constant R_ATTR = 8;
    uint8 internal constant R_OUTPUT = 9;
    uint8 internal constant R_TOO_LARGE = 10;
    uint8 internal constant R_STEP = 11;

    // Positions in Desc.a. linear / requant / avgpool: x_zp then the REQ block.
    uint256 internal constant A_XZP = 0;
    uint256 internal constant A_MODE = 1;
    uint256 internal constant A_MULT = 2;
    uint256 internal constant A_SHIFT = 3;
    uint256 internal constant A_ZP = 4;
    uint256 internal constant A_LO = 5;
    uint256 internal constant A_HI = 6;
    // chunkmax: pairs at 0, q at A_Q. chunksum: x_zp at A_XZP, q at A_Q. sumrequant: the REQ
    // block at A_MODE..A_HI.
    uint256 internal constant A_PAIRS = 0;
    uint256 internal constant A_Q = 7;
    // matmul: za at A_XZP, the REQ block at A_MODE..A_HI, ta, tb, zb at A_TA, A_TB, A_ZB.
    // mul: za at A_XZP, the REQ block, zb at A_ZB.
    uint256 internal constant A_TA = 7;
    uint256 internal constant A_TB = 8;
    uint256 internal constant A_ZB = 9;
    // softmax: causal at A_CAUSAL, the position offset at A_OFF. rope: x_zp at A_XZP, the REQ
    // block, the position offset at A_OFF.
    uint256 internal constant A_CAUSAL = 0;
    uint256 internal constant A_OFF = 7;
    // layernorm: x_zp at A_XZP, the REQ block, rms at A_RMS, eps at A_EPS.
    uint256 internal constant A_RMS = 8;
    uint256 internal constant A_EPS = 9;
    // topk: pairs at A_PAIRS, q at A_Q, k at A_K.
    uint256 internal constant A_K = 8;
    // add: za zb ma mb shift zy lo hi at 0..7. relu: zp at 0. im2col/maxpool: kh kw sh sw ph pw
    // (pad) at 0..6. transpose: perm at 0..3. concat: axis at A_AXIS; slice: axis, start, len.
    uint256 internal constant A_AXIS = 0;
    uint256 internal constant A_START = 1;
    uint256 internal constant A_LEN = 2;
    uint256 internal constant A_KH = 0;
    uint256 internal constant A_KW = 1;
    uint256 internal constant A_SH = 2;
    uint256 internal constant A_SW = 3;
    uint256 internal constant A_PH = 4;
    uint256 internal constant A_PW = 5;
    uint256 internal constant A_PAD = 6;

    /// @notice TensorType: dtype (1 int8, 2 int32), rank 1..4, dims (1 beyond the rank).
    struct TType {
        uint256 dtype;
        uint256 rank;
        uint256[4] dims;
    }

    /// @notice SlotRef: where an input lives (WEIGHT w, UNIT_INPUT, OP_OUTPUT j) and its type.
    struct Slot {
        uint256 kind;
        uint256 index;
        TType t;
    }

    struct Desc {
        uint256 opcode;
        Slot[] ins;
        TType out;
        int256[10] a;
    }

    function _bad(uint8 reason) private pure {
        revert Int8Errors.Int8Verifier_BadDescriptor(reason);
    }

    function _need(bool ok, uint8 reason) private pure {
        if (!ok) revert Int8Errors.Int8Verifier_BadDescriptor(reason);
    }

    // ------------------------------------------------------------------ field readers
    function _u8(bytes calldata d, uint256 o) private pure returns (uint256) {
        return uint8(d[o]);
    }

    function _i8(bytes calldata d, uint256 o) private pure returns (int256) {
        return int8(uint8(d[o]));
    }

    function _u16(bytes calldata d, uint256 o) private pure returns (int256) {
        return int256(uint256(uint16(bytes2(d[o:o + 2]))));
    }

    function _u32(bytes calldata d, uint256 o) private pure returns (uint256) {
        return uint32(bytes4(d[o:o + 4]));
    }

    function _i32(bytes calldata d, uint256 o) private pure returns (int256) {
        return int32(uint32(bytes4(d[o:o + 4])));
    }

    /// @notice Attribute bytes of each opcode (types.ATTR_LAYOUT); 0 for an unknown opcode.
    function attrSize(uint256 op) internal pure returns (uint256) {
        if (op == OP_LINEAR || op == OP_AVGPOOL) return 10;
        if (op == OP_REQUANT || op == OP_SUMREQUANT || op == OP_TOPK || op == OP_SLICE) return 9;
        if (op == OP_CHUNKMAX || op == OP_CHUNKSUM || op == OP_SOFTMAX) return 5;
        if (op == OP_ADD || op == OP_ROPE) return 14;
        if (op == OP_MATMUL) return 13;
        if (op == OP_MUL) return 11;
        if (op == OP_LAYERNORM) return 15;
        if (op == OP_RELU || op == OP_CONCAT) return 1;
        if (op == OP_IM2COL) return 13;
        if (op == OP_MAXPOOL) return 12;
        if (op == OP_TRANSPOSE) return 4;
        return 0; // argmax, reshape, pairargmax, lut, gather
    }

    // ------------------------------------------------------------------ decoding

    function _ttype(bytes calldata d, uint256 o) private pure returns (TType memory t) {
        t.dtype = _u8(d, o);
        t.rank = _u8(d, o + 1);
        _need(t.dtype == DT_INT8 || t.dtype == DT_INT32, R_TYPE);
        _need(t.rank >= 1 && t.rank <= 4, R_TYPE);
        for (uint256 i = 0; i < 4; ++i) {
            uint256 v = _u32(d, o + 2 + 4 * i);
            // INVARIANT (canonical form): used dims >= 1, unused dims exactly 1.
            _need(i < t.rank ? v >= 1 : v == 1, R_TYPE);
            t.dims[i] = v;
        }
    }

    function _req(bytes calldata d, uint256 o, int256[10] memory a) private pure {
        a[A_MODE] = int256(_u8(d, o));
        a[A_MULT] = _i32(d, o + 1);
        a[A_SHIFT] = int256(_u8(d, o + 5));
        a[A_ZP] = _i8(d, o + 6);
        a[A_LO] = _i8(d, o + 7);
        a[A_HI] = _i8(d, o + 8);
        _need(a[A_MODE] <= 2, R_REQUANT);
    }

    /// @notice Decode and fully validate `d` (opcodes 0x01-0x0E); reverts Int8Verifier_BadDescriptor
    ///         otherwise.
    function decode(bytes calldata d) internal pure returns (Desc memory D) {
        D = decodeFields(d);
        _check(D);
    }

    /// @notice Decode the fields of `d` (length, opcode, slots, canonical types, attributes and the
    ///         REQ mode) without the op's typing rules: `decode` adds them for 0x01-0x0E,
    ///         LibTransformer.check for 0x0F-0x16.
    function decodeFields(bytes calldata d) internal pure returns (Desc memory D) {
        _need(d.length >= 2, R_LENGTH);
        D.opcode = _u8(d, 0);
        _need(D.opcode >= OP_LINEAR && D.opcode <= OP_LAST, R_OPCODE);
        uint256 nIn = _u8(d, 1);
        uint256 o = 2 + SLOT_BYTES * nIn;
        _need(d.length == o + TTYPE_BYTES + attrSize(D.opcode), R_LENGTH);
        D.ins = new Slot[](nIn);
        for (uint256 i = 0; i < nIn; ++i) {
            uint256 s = 2 + SLOT_BYTES * i;
            Slot memory sl = D.ins[i];
            sl.kind = _u8(d, s);
            sl.index = _u32(d, s + 1);
            _need(sl.kind <= KIND_OP_OUTPUT, R_SLOT);
            _need(sl.kind != KIND_UNIT_INPUT || sl.index == 0, R_SLOT);
            sl.t = _ttype(d, s + 5);
        }
        D.out = _ttype(d, o);
        _attrs(d, o + TTYPE_BYTES, D);
    }

    /// @notice Byte length of the DECLARED output type, after only the checks that locate and read
    ///         it: length >= 2, known opcode, exact length for (opcode, nIn), canonical output type,
    ///         at most 2^28 bytes. What `Int8Verifier.outputBytes` (the game's proveOp) runs.
    /// @dev Every check here is one of decode's, so a descriptor rejected here is rejected by
    ///      decode; on a descriptor decode accepts, the declared output equals the rule's and this
    ///      returns nbytes(decode(d).out). Inputs, attributes and typing rules are left to decode,
    ///      which verify runs at the one-step (docs/protocol.md 5.7.2).
    function declaredOutputBytes(bytes calldata d) internal pure returns (uint256 n) {
        _need(d.length >= 2, R_LENGTH);
        uint256 op = _u8(d, 0);
        _need(op >= OP_LINEAR && op <= OP_LAST, R_OPCODE);
        uint256 o = 2 + SLOT_BYTES * _u8(d, 1);
        _need(d.length == o + TTYPE_BYTES + attrSize(op), R_LENGTH);
        n = nbytes(_ttype(d, o));
        _need(n <= MAX_TENSOR_BYTES, R_TOO_LARGE);
    }

    function _attrs(bytes calldata d, uint256 o, Desc memory D) private pure {
        uint256 op = D.opcode;
        int256[10] memory a = D.a;
        if (op == OP_LINEAR || op == OP_AVGPOOL) {
            a[A_XZP] = _i8(d, o);
            _req(d, o + 1, a);
        } else if (op == OP_REQUANT || op == OP_SUMREQUANT) {
            _req(d, o, a);
        } else if (op == OP_MATMUL) {
            // ta u8, tb u8, za i8, zb i8, REQ (13 bytes)
            a[A_TA] = int256(_u8(d, o));
            a[A_TB] = int256(_u8(d, o + 1));
            a[A_XZP] = _i8(d, o + 2);
            a[A_ZB] = _i8(d, o + 3);
            _req(d, o + 4, a);
        } else if (op == OP_MUL) {
            // za i8, zb i8, REQ (11 bytes)
            a[A_XZP] = _i8(d, o);
            a[A_ZB] = _i8(d, o + 1);
            _req(d, o + 2, a);
        } else if (op == OP_CHUNKMAX) {
            // q u32, pairs u8 (5 bytes)
            a[A_Q] = int256(_u32(d, o));
            a[A_PAIRS] = int256(_u8(d, o + 4));
        } else if (op == OP_LAYERNORM) {
            // x_zp i8, rms u8, eps u32, REQ (15 bytes)
            a[A_XZP] = _i8(d, o);
            a[A_RMS] = int256(_u8(d, o + 1));
            a[A_EPS] = int256(_u32(d, o + 2));
            _req(d, o + 6, a);
        } else if (op == OP_TOPK) {
            // k u32, q u32, pairs u8 (9 bytes)
            a[A_K] = int256(_u32(d, o));
            a[A_Q] = int256(_u32(d, o + 4));
            a[A_PAIRS] = int256(_u8(d, o + 8));
        } else if (op == OP_ROPE) {
            // x_zp i8, off u32, REQ (14 bytes)
            a[A_XZP] = _i8(d, o);
            a[A_OFF] = int256(_u32(d, o + 1));
            _req(d, o + 5, a);
        } else if (op == OP_SOFTMAX) {
            // causal u8, off u32 (5 bytes)
            a[A_CAUSAL] = int256(_u8(d, o));
            a[A_OFF] = int256(_u32(d, o + 1));
        } else if (op == OP_CHUNKSUM) {
            // x_zp i8, q u32 (5 bytes)
            a[A_XZP] = _i8(d, o);
            a[A_Q] = int256(_u32(d, o + 1));
        } else if (op == OP_ADD) {
            // za i8, zb i8, ma i32, mb i32, shift u8, zy i8, lo i8, hi i8 (14 bytes)
            a[0] = _i8(d, o);
            a[1] = _i8(d, o + 1);
            a[2] = _i32(d, o + 2);
            a[3] = _i32(d, o + 6);
            a[4] = int256(_u8(d, o + 10));
            a[5] = _i8(d, o + 11);
            a[6] = _i8(d, o + 12);
            a[7] = _i8(d, o + 13);
        } else if (op == OP_RELU) {
            a[0] = _i8(d, o);
        } else if (op == OP_IM2COL || op == OP_MAXPOOL) {
            for (uint256 i = 0; i < 6; ++i) {
                a[i] = _u16(d, o + 2 * i);
            }
            if (op == OP_IM2COL) a[A_PAD] = _i8(d, o + 12);
        } else if (op == OP_TRANSPOSE) {
            for (uint256 i = 0; i < 4; ++i) {
                a[i] = int256(_u8(d, o + i));
            }
        } else if (op >= OP_CONCAT) {
            // axis u8 (concat, 1 byte); slice: axis u8, start u32, len u32 (9 bytes)
            a[A_AXIS] = int256(_u8(d, o));
            if (op == OP_SLICE) {
                a[A_START] = int256(_u32(d, o + 1));
                a[A_LEN] = int256(_u32(d, o + 5));
            }
        }
    }

    // ------------------------------------------------------------------ typing rules (rules.py)

    /// @notice Element count (product of the dims).
    function count(TType memory t) internal pure returns (uint256) {
        return t.dims[0] * t.dims[1] * t.dims[2] * t.dims[3];
    }

    /// @notice Bytes per element of a dtype.
    function width(TType memory t) internal pure returns (uint256) {
        return t.dtype == DT_INT8 ? 1 : 4;
    }

    /// @notice Byte length of the canonical encoding.
    function nbytes(TType memory t) internal pure returns (uint256) {
        return count(t) * width(t);
    }

    function _eq(TType memory x, TType memory y) internal pure returns (bool) {
        return x.dtype == y.dtype && x.rank == y.rank && x.dims[0] == y.dims[0] && x.dims[1] == y.dims[1]
            && x.dims[2] == y.dims[2] && x.dims[3] == y.dims[3];
    }

    function _is(TType memory t, uint256 dtype, uint256 d0, uint256 d1, uint256 rank) internal pure returns (bool) {
        return t.dtype == dtype && t.rank == rank && t.dims[0] == d0 && t.dims[1] == d1 && t.dims[2] == 1
            && t.dims[3] == 1;
    }

    /// @dev Requant.check: mode 0 has every field 0; mode 2 keeps mult/shift inline at 0; mode 1
    ///      has mult in [0, 2^31-1] and shift in [1, 62]; modes 1 and 2 need lo <= hi.
    function _checkReq(int256[10] memory a) internal pure {
        if (a[A_MODE] == int256(MODE_NONE)) {
            _need(a[A_MULT] == 0 && a[A_SHIFT] == 0 && a[A_ZP] == 0 && a[A_LO] == 0 && a[A_HI] == 0, R_REQUANT);
            return;
        }
        if (a[A_MODE] == int256(MODE_PER_CHANNEL)) _need(a[A_MULT] == 0 && a[A_SHIFT] == 0, R_REQUANT);
        if (a[A_MODE] == int256(MODE_PER_TENSOR)) _checkMultShift(a[A_MULT], a[A_SHIFT], R_REQUANT);
        _need(a[A_LO] <= a[A_HI], R_REQUANT);
    }

    function _checkMultShift(int256 mult, int256 shift, uint8 reason) private pure {
        _need(mult >= 0 && mult <= MAX_MULT && shift >= 1 && shift <= 62, reason);
    }

    /// @dev Window output size: (size + 2p - k) / s + 1, with k, s >= 1 and k <= size + 2p.
    function _windowOut(uint256 size, int256 k, int256 s, int256 p) private pure returns (uint256) {
        _need(k >= 1 && s >= 1, R_ATTR);
        int256 span = int256(size) + 2 * p - k;
        _need(span >= 0, R_ATTR);
        return uint256(span / s) + 1;
    }

    /// @dev rules.check_descriptor: the declared output equals the rule's, every tensor <= 2^28 B.
    function _check(Desc memory D) private pure {
        TType memory want = _expectedOut(D);
        _need(_eq(D.out, want), R_OUTPUT);
        for (uint256 i = 0; i < D.ins.length; ++i) {
            _need(nbytes(D.ins[i].t) <= MAX_TENSOR_BYTES, R_TOO_LARGE);
        }
        _need(nbytes(D.out) <= MAX_TENSOR_BYTES, R_TOO_LARGE);
        (uint256 leaves, uint256 scanned) = stepReads(D);
        _need(scanned <= MAX_STEP_ELEMENTS && leaves <= MAX_STEP_LEAVES, R_STEP);
    }

    /// @notice What one input range of `n` bytes counts against MAX_STEP_LEAVES: the leaves it
    ///         can touch at the worst alignment, plus one for its sibling path (rules.range_leaves).
    function rangeLeaves(uint256 n) internal pure returns (uint256) {
        return (n + 2 * Constants.LEAF_BYTES - 2) / Constants.LEAF_BYTES + 1;
    }

    /// @notice (leaves, scanned elements) of the worst output element's one-step of a typed
    ///         descriptor (rules.step_reads): the ranges of LibInt8Ops.ranges, maxpool's window
    ///         bounded by the image.
    function stepReads(Desc memory D) internal pure returns (uint256 leaves, uint256 scanned) {
        uint256 op = D.opcode;
        TType memory x = D.ins[0].t;
        if (op == OP_LINEAR) {
            // x row, W row, bias element (+ qp row); the dot product is bounded by MAX_K
            leaves = 2 * rangeLeaves(x.dims[x.rank - 1]) + rangeLeaves(4) + (D.ins.length == 4 ? rangeLeaves(8) : 0);
        } else if (op == OP_REQUANT) {
            leaves = rangeLeaves(4) + (D.ins.length == 2 ? rangeLeaves(8) : 0);
        } else if (op == OP_ADD) {
            leaves = 2 * rangeLeaves(1);
        } else if (op == OP_MAXPOOL) {
            // one range per window row inside the image
            uint256 rows = _min(uint256(D.a[A_KH]), x.dims[1]);
            uint256 cols = _min(uint256(D.a[A_KW]), x.dims[2]);
            leaves = rows * rangeLeaves((cols - 1) * x.dims[3] + 1);
            scanned = rows * cols;
        } else if (op == OP_AVGPOOL) {
            leaves = rangeLeaves(x.dims[1] * x.dims[2] * x.dims[3]);
            scanned = x.dims[1] * x.dims[2];
        } else if (op == OP_ARGMAX) {
            scanned = x.dims[x.rank - 1];
            leaves = rangeLeaves(scanned * width(x));
        } else if (op == OP_CHUNKMAX) {
            // one chunk: q values, or q pairs (two int32 elements each)
            uint256 q = uint256(D.a[A_Q]);
            (leaves, scanned) = D.a[A_PAIRS] == 1 ? (rangeLeaves(8 * q), 2 * q) : (rangeLeaves(q * width(x)), q);
        } else if (op == OP_PAIRARGMAX) {
            uint256 g = x.dims[x.rank - 2];
            (leaves, scanned) = (rangeLeaves(8 * g), 2 * g);
        } else if (op == OP_CHUNKSUM) {
            // q positions of one channel, strided by C
            uint256 q = uint256(D.a[A_Q]);
            (leaves, scanned) = (rangeLeaves((q - 1) * x.dims[3] + 1), q);
        } else if (op == OP_SUMREQUANT) {
            scanned = x.dims[x.rank - 1];
            leaves = rangeLeaves(4 * scanned);
        } else {
            leaves = rangeLeaves(width(x)); // relu, im2col, reshape, transpose, concat, slice: one element
        }
    }

    function _min(uint256 a, uint256 b) private pure returns (uint256) {
        return a < b ? a : b;
    }

    function _expectedOut(Desc memory D) private pure returns (TType memory o) {
        uint256 op = D.opcode;
        // 0x0F-0x16 are validated by LibTransformer in Int8TransformerVerifier (docs/protocol.md 5.7.1)
        _need(op < OP_MATMUL || op > OP_TOPK, R_OPCODE);
        bool hasReq = op == OP_LINEAR || op == OP_REQUANT || op == OP_AVGPOOL || op == OP_SUMREQUANT;
        uint256 mode = hasReq ? uint256(D.a[A_MODE]) : MODE_NONE;
        uint256 base = op == OP_LINEAR ? 3 : op == OP_ADD || op == OP_CONCAT ? 2 : 1;
        _need(D.ins.length == base + (mode == MODE_PER_CHANNEL ? 1 : 0), R_INPUT_COUNT);
        if (hasReq) _checkReq(D.a);
        if (mode == MODE_PER_CHANNEL) _need(D.ins[D.ins.length - 1].kind == KIND_WEIGHT, R_INPUT_TYPE);
        TType memory x = D.ins[0].t;
        if (op == OP_LINEAR) return _linearOut(D, x, mode);
        if (op == OP_REQUANT) {
            _need(x.dtype == DT_INT32 && mode != MODE_NONE, R_INPUT_TYPE);
            if (mode == MODE_PER_CHANNEL) {
                _need(_is(D.ins[1].t, DT_INT32, x.dims[x.rank - 1], 2, 2), R_INPUT_TYPE);
            }
            return _like(x, DT_INT8);
        }
        if (op == OP_ADD) {
            _need(x.dtype == DT_INT8 && _eq(D.ins[1].t, x), R_INPUT_TYPE);
            _checkMultShift(D.a[2], D.a[4], R_ATTR);
            _checkMultShift(D.a[3], D.a[4], R_ATTR);
            _need(D.a[6] <= D.a[7], R_ATTR);
            return x;
        }
        if (op == OP_RELU) {
            _need(x.dtype == DT_INT8, R_INPUT_TYPE);
            return x;
        }
        if (op == OP_IM2COL || op == OP_MAXPOOL) return _windowOutType(D, x);
        if (op == OP_AVGPOOL) {
            _need(x.dtype == DT_INT8 && x.rank == 4, R_INPUT_TYPE);
            _need(mode == MODE_PER_TENSOR, R_REQUANT);
            o.dtype = DT_INT8;
            o.rank = 2;
            o.dims = [x.dims[0], x.dims[3], 1, 1];
            return o;
        }
        if (op == OP_ARGMAX) {
            o.dtype = DT_INT32;
            o.dims = [uint256(1), 1, 1, 1];
            if (x.rank == 1) {
                o.rank = 1;
            } else {
                o.rank = x.rank - 1;
                for (uint256 i = 0; i < o.rank; ++i) {
                    o.dims[i] = x.dims[i];
                }
            }
            return o;
        }
        if (op == OP_RESHAPE) {
            _need(D.out.dtype == x.dtype && count(D.out) == count(x), R_OUTPUT);
            return D.out;
        }
        if (op == OP_TRANSPOSE) return _transposeOut(D, x);
        if (op >= OP_CONCAT) return _viewOut(D, x);
        return _chunkedOut(D, x, mode);
    }

    /// @dev concat: y of x's dtype and rank, equal dims but on the axis, out x with x + y there;
    ///      slice: 1 <= len, start + len <= x[axis], out x with len there (rules._view_out).
    function _viewOut(Desc memory D, TType memory x) private pure returns (TType memory o) {
        uint256 axis = uint256(D.a[A_AXIS]);
        _need(axis < x.rank, R_ATTR);
        if (D.opcode == OP_CONCAT) {
            TType memory y = D.ins[1].t;
            o = _like(y, y.dtype);
            o.dims[axis] = x.dims[axis];
            _need(_eq(o, x), R_INPUT_TYPE);
            o.dims[axis] += y.dims[axis];
        } else {
            uint256 len = uint256(D.a[A_LEN]);
            _need(len >= 1 && uint256(D.a[A_START]) + len <= x.dims[axis], R_ATTR);
            o = _like(x, x.dtype);
            o.dims[axis] = len;
        }
    }

    /// @notice (K, q, G) of a chunkmax or chunksum (rules.chunk_geometry): the reduced length K
    ///         (chunkmax: the row, or the pairs of a row; chunksum: the H*W positions), the chunk
    ///         length q and G = ceil(K / q). The caller has validated the descriptor (q >= 1).
    function chunkGeometry(Desc memory D) internal pure returns (uint256 k, uint256 q, uint256 g) {
        TType memory x = D.ins[0].t;
        if (D.opcode == OP_CHUNKSUM) {
            k = x.dims[1] * x.dims[2];
        } else {
            k = x.dims[x.rank - 1 - (D.a[A_PAIRS] == 1 ? 1 : 0)];
        }
        q = uint256(D.a[A_Q]);
        g = q == 0 ? 0 : (k + q - 1) / q;
    }

    /// @dev Output types of chunkmax, pairargmax, chunksum, sumrequant (rules._chunked_out).
    function _chunkedOut(Desc memory D, TType memory x, uint256 mode) private pure returns (TType memory o) {
        uint256 op = D.opcode;
        o.dtype = DT_INT32;
        o.dims = [uint256(1), 1, 1, 1];
        if (op == OP_SUMREQUANT) {
            _need(x.dtype == DT_INT32 && x.rank >= 2, R_INPUT_TYPE);
            _need(mode == MODE_PER_TENSOR, R_REQUANT);
            return _prefix(x, x.rank - 1, DT_INT8);
        }
        if (op == OP_PAIRARGMAX) {
            _need(x.dtype == DT_INT32 && x.rank >= 2 && x.dims[x.rank - 1] == 2, R_INPUT_TYPE);
            if (x.rank == 2) {
                o.rank = 1;
                return o;
            }
            return _prefix(x, x.rank - 2, DT_INT32);
        }
        if (op == OP_CHUNKSUM) {
            _need(x.dtype == DT_INT8 && x.rank == 4, R_INPUT_TYPE);
            (uint256 p, uint256 qs, uint256 gs) = chunkGeometry(D);
            _need(qs >= 1 && qs <= p, R_ATTR);
            o.rank = 3;
            o.dims = [x.dims[0], x.dims[3], gs, 1];
            return o;
        }
        // chunkmax: values [.., K] of rank 1..3, or pairs int32 [.., K, 2] of rank 2..4
        uint256 lead;
        if (D.a[A_PAIRS] == 1) {
            _need(x.dtype == DT_INT32 && x.rank >= 2 && x.dims[x.rank - 1] == 2, R_INPUT_TYPE);
            lead = x.rank - 2;
        } else {
            _need(D.a[A_PAIRS] == 0, R_ATTR);
            _need(x.rank <= 3, R_INPUT_TYPE);
            lead = x.rank - 1;
        }
        (uint256 k, uint256 q, uint256 g) = chunkGeometry(D);
        _need(q >= 1 && q <= k, R_ATTR);
        o = _prefix(x, lead, DT_INT32);
        o.rank = lead + 2;
        o.dims[lead] = g;
        o.dims[lead + 1] = 2;
    }

    /// @dev The type of x's first `r` dims (rank r >= 1 here) with `dtype`.
    function _prefix(TType memory x, uint256 r, uint256 dtype) private pure returns (TType memory o) {
        o.dtype = dtype;
        o.rank = r;
        o.dims = [uint256(1), 1, 1, 1];
        for (uint256 i = 0; i < r; ++i) {
            o.dims[i] = x.dims[i];
        }
    }

    function _like(TType memory x, uint256 dtype) internal pure returns (TType memory o) {
        o.dtype = dtype;
        o.rank = x.rank;
        o.dims = [x.dims[0], x.dims[1], x.dims[2], x.dims[3]];
    }

    function _linearOut(Desc memory D, TType memory x, uint256 mode) private pure returns (TType memory o) {
        _need(x.dtype == DT_INT8 && x.rank >= 2, R_INPUT_TYPE);
        TType memory w = D.ins[1].t;
        uint256 k = x.dims[x.rank - 1];
        uint256 n = w.dims[0];
        _need(w.dtype == DT_INT8 && w.rank == 2 && w.dims[1] == k, R_INPUT_TYPE);
        _need(k <= MAX_K, R_ATTR);
        _need(_is(D.ins[2].t, DT_INT32, n, 1, 1), R_INPUT_TYPE);
        if (mode == MODE_PER_CHANNEL) _need(_is(D.ins[3].t, DT_INT32, n, 2, 2), R_INPUT_TYPE);
        o = _like(x, mode == MODE_NONE ? DT_INT32 : DT_INT8);
        o.dims[x.rank - 1] = n;
    }

    function _windowOutType(Desc memory D, TType memory x) private pure returns (TType memory o) {
        _need(x.dtype == DT_INT8 && x.rank == 4, R_INPUT_TYPE);
        int256[10] memory a = D.a;
        uint256 oh = _windowOut(x.dims[1], a[A_KH], a[A_SH], a[A_PH]);
        uint256 ow = _windowOut(x.dims[2], a[A_KW], a[A_SW], a[A_PW]);
        uint256 cols = D.opcode == OP_IM2COL ? uint256(a[A_KH] * a[A_KW]) * x.dims[3] : x.dims[3];
        o.dtype = DT_INT8;
        o.rank = 4;
        o.dims = [x.dims[0], oh, ow, cols];
    }

    function _transposeOut(Desc memory D, TType memory x) private pure returns (TType memory o) {
        uint256 r = x.rank;
        uint256 seen = 0;
        for (uint256 i = 0; i < 4; ++i) {
            uint256 p = uint256(D.a[i]);
            if (i < r) {
                // INVARIANT: perm[:r] is a permutation of 0..r-1 (each seen once).
                _need(p < r && (seen >> p) & 1 == 0, R_ATTR);
                seen |= uint256(1) << p;
            } else {
                _need(p == i, R_ATTR);
            }
        }
        o.dtype = x.dtype;
        o.rank = r;
        o.dims = [uint256(1), 1, 1, 1];
        for (uint256 i = 0; i < r; ++i) {
            o.dims[i] = x.dims[uint256(D.a[i])];
        }
    }
}
