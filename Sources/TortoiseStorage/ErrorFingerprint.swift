/// The fingerprint of an error text: the text with its variable parts replaced, so that
/// errors that differ only in ids and numbers fall into one group.
///
/// UUIDs, and words of 8 or more hexadecimal characters with at least one digit, become
/// `<id>`; every other run of digits becomes `<n>`; whitespace is trimmed and runs of it
/// become one space. ``group(of:)`` is a stable 64-bit FNV-1a hash of the fingerprint,
/// shown as 16 lower-case hex digits.
public enum ErrorFingerprint {
    /// The fingerprint text of `error`.
    public static func fingerprint(_ error: String) -> String {
        String(decoding: fingerprintUTF8(error), as: UTF8.self)
    }

    /// The group of `error`: the hash of its fingerprint.
    public static func group(of error: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in fingerprintUTF8(error) {
            h ^= UInt64(b)
            h = h &* 0x0000_0100_0000_01b3
        }
        return h
    }

    /// The fingerprint's UTF-8. Every `NACK` computes it on the store's writer thread, so
    /// ASCII (most error texts) is told apart byte by byte and Unicode's properties are
    /// asked only of other characters. `FingerprintTests` checks it against the
    /// definition, written plainly there.
    static func fingerprintUTF8(_ error: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(error.utf8.count)
        let scalars = Array(error.unicodeScalars)
        func append(_ c: Unicode.Scalar) {
            if c.isASCII { out.append(UInt8(c.value)) } else { out.append(contentsOf: UTF8.encode(c)!) }
        }
        let number: [UInt8] = Array("<n>".utf8)
        let id: [UInt8] = Array("<id>".utf8)
        var i = 0
        var pendingSpace = false
        while i < scalars.count {
            let c = scalars[i]
            if isWhitespace(c) {
                pendingSpace = !out.isEmpty
                i += 1
                continue
            }
            if pendingSpace { out.append(0x20); pendingSpace = false }
            if isWordScalar(c) {
                // A word: a maximal run of letters, digits and '_'; UUIDs join with '-'.
                var j = i
                while j < scalars.count, isWordScalar(scalars[j]) || (scalars[j] == "-" && j + 1 < scalars.count && isHex(scalars[j + 1])) { j += 1 }
                let word = scalars[i..<j]
                if isUUID(word) || isHexID(word) {
                    out.append(contentsOf: id)
                    i = j
                    continue
                }
                // Not an id: fall back to plain words, where digit runs become <n>.
                var k = i
                while k < scalars.count, isWordScalar(scalars[k]) { k += 1 }
                if isHexID(scalars[i..<k]) {
                    out.append(contentsOf: id)
                    i = k
                    continue
                }
                var m = i
                while m < k {
                    if isDigit(scalars[m]) {
                        while m < k, isDigit(scalars[m]) { m += 1 }
                        out.append(contentsOf: number)
                    } else {
                        append(scalars[m])
                        m += 1
                    }
                }
                i = k
                continue
            }
            if isDigit(c) {
                while i < scalars.count, isDigit(scalars[i]) { i += 1 }
                out.append(contentsOf: number)
                continue
            }
            append(c)
            i += 1
        }
        return out
    }

    /// A group as 16 lower-case hex digits.
    public static func hex(_ group: UInt64) -> String {
        let s = String(group, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }

    /// Parses 16 hex digits (either case).
    public static func parseHex(_ text: some StringProtocol) -> UInt64? {
        guard text.count == 16 else { return nil }
        return UInt64(text, radix: 16)
    }

    /// Unicode's White_Space; in ASCII, tab to carriage return and the space.
    @inline(__always)
    private static func isWhitespace(_ c: Unicode.Scalar) -> Bool {
        if c.isASCII { return (c.value >= 9 && c.value <= 13) || c.value == 32 }
        return c.properties.isWhitespace
    }
    private static func isDigit(_ c: Unicode.Scalar) -> Bool { c.value >= 48 && c.value <= 57 }
    private static func isHex(_ c: Unicode.Scalar) -> Bool {
        isDigit(c) || (c.value >= 65 && c.value <= 70) || (c.value >= 97 && c.value <= 102)
    }
    static func isWordScalar(_ c: Unicode.Scalar) -> Bool {
        if c.isASCII { return ErrorWords.isASCIIWordByte(UInt8(c.value)) }
        return c.properties.isAlphabetic || c.properties.numericType != nil
    }
    private static func isHexID(_ w: ArraySlice<Unicode.Scalar>) -> Bool {
        w.count >= 8 && w.allSatisfy(isHex) && w.contains(where: isDigit)
    }
    /// 8-4-4-4-12 hexadecimal characters joined by '-'.
    private static func isUUID(_ w: ArraySlice<Unicode.Scalar>) -> Bool {
        guard w.count == 36 else { return false }
        for (n, c) in w.enumerated() {
            if n == 8 || n == 13 || n == 18 || n == 23 {
                guard c == "-" else { return false }
            } else if !isHex(c) {
                return false
            }
        }
        return true
    }
}

/// The words of an error text as the search sees them: maximal runs of Unicode letters,
/// digits and `_`, case-folded.
public enum ErrorWords {
    /// The longest word kept in the index, in bytes; longer words are cut.
    public static let maxWordBytes = 200

    /// The distinct words of `text`, in order of first appearance.
    public static func words(_ text: String) -> [String] {
        var result: [String] = []
        var seen = Set<String>()
        // The current word's UTF-8, its ASCII letters already lower-case; a word with
        // other letters is lower-cased whole, as Unicode says, when it ends.
        var current: [UInt8] = []
        var ascii = true
        func flush() {
            guard !current.isEmpty else { return }
            var w = String(decoding: current, as: UTF8.self)
            if !ascii { w = w.lowercased() }
            if w.utf8.count > maxWordBytes { w = String(decoding: w.utf8.prefix(maxWordBytes), as: UTF8.self) }
            // Few words (most errors): a look through them beats hashing each.
            if result.count < 16 {
                if !result.contains(w) {
                    result.append(w)
                    if result.count == 16 { seen = Set(result) }
                }
            } else if seen.insert(w).inserted {
                result.append(w)
            }
            current.removeAll(keepingCapacity: true)
            ascii = true
        }
        for c in text.unicodeScalars {
            if c.isASCII {
                let b = UInt8(c.value)
                if b >= 0x41 && b <= 0x5A { current.append(b + 0x20) } else if isASCIIWordByte(b) { current.append(b) } else { flush() }
            } else if ErrorFingerprint.isWordScalar(c) {
                current.append(contentsOf: UTF8.encode(c)!)
                ascii = false
            } else {
                flush()
            }
        }
        flush()
        return result
    }

    /// An ASCII letter, digit or `_` (what Unicode's letters and digits are in ASCII).
    @inline(__always)
    static func isASCIIWordByte(_ b: UInt8) -> Bool {
        (b >= 0x61 && b <= 0x7A) || (b >= 0x41 && b <= 0x5A) || (b >= 0x30 && b <= 0x39) || b == 0x5F
    }
}
