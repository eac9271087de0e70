/// Big-endian encoding of the fixed-width fields in keys and records, so that byte order
/// is numeric order in LMDB's sorted tables.
struct ByteWriter {
    var bytes: [UInt8] = []

    init(capacity: Int = 32) { bytes.reserveCapacity(capacity) }

    // Fixed-width numbers go in with one append each, not one per byte: every record,
    // key and redo-log batch is written through here.
    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.bigEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.bigEndian) { bytes.append(contentsOf: $0) } }
    mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v) ^ (1 << 63)) }
    mutating func raw<C: Collection>(_ c: C) where C.Element == UInt8 { bytes.append(contentsOf: c) }
    /// A string with a 32-bit length in front.
    mutating func string(_ s: String) { u32(UInt32(s.utf8.count)); raw(s.utf8) }
}

/// Reads what ``ByteWriter`` wrote; a short or damaged record throws `corrupt`.
struct ByteReader {
    let bytes: [UInt8]
    var offset = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    private mutating func need(_ n: Int) throws(StorageError) {
        if offset + n > bytes.count { throw StorageError(.corrupt, "a stored record is shorter than its format says") }
    }
    mutating func u8() throws(StorageError) -> UInt8 { try need(1); defer { offset += 1 }; return bytes[offset] }
    mutating func u32() throws(StorageError) -> UInt32 {
        try need(4)
        var v: UInt32 = 0
        for i in 0..<4 { v = v << 8 | UInt32(bytes[offset + i]) }
        offset += 4
        return v
    }
    mutating func u64() throws(StorageError) -> UInt64 {
        try need(8)
        var v: UInt64 = 0
        for i in 0..<8 { v = v << 8 | UInt64(bytes[offset + i]) }
        offset += 8
        return v
    }
    /// A count: a u64 that must fit an `Int` (a stored record with a larger one is damaged).
    mutating func count() throws(StorageError) -> Int {
        let v = try u64()
        guard let n = Int(exactly: v) else { throw StorageError(.corrupt, "a stored count is out of range (\(v))") }
        return n
    }
    mutating func i64() throws(StorageError) -> Int64 { Int64(bitPattern: try u64() ^ (1 << 63)) }
    mutating func raw(_ n: Int) throws(StorageError) -> ArraySlice<UInt8> { try need(n); defer { offset += n }; return bytes[offset..<offset + n] }
    mutating func string() throws(StorageError) -> String { let n = Int(try u32()); return String(decoding: try raw(n), as: UTF8.self) }
    mutating func rest() -> [UInt8] { defer { offset = bytes.count }; return Array(bytes[offset...]) }
}

extension UInt64 {
    var bigEndianBytes: [UInt8] { var w = ByteWriter(capacity: 8); w.u64(self); return w.bytes }
    init(bigEndianBytes b: some Collection<UInt8>) {
        var v: UInt64 = 0
        for x in b { v = v << 8 | UInt64(x) }
        self = v
    }
}
