import Testing
import TortoiseStorage

@Suite struct FingerprintTests {
    @Test(arguments: [
        ("user 42 not found", "user <n> not found"),
        ("order 1a2b3c4d5e failed", "order <id> failed"),
        ("job 550e8400-e29b-41d4-a716-446655440000 lost", "job <id> lost"),
        ("  timeout   after\t30s  ", "timeout after <n>s"),
        ("deadbeef is not an id but cafe1234 is", "deadbeef is not an id but <id> is"),
        ("abcdef12-3", "<id>-<n>"),
        ("retry7 of 10", "retry<n> of <n>"),
    ])
    func fingerprints(input: String, expected: String) {
        #expect(ErrorFingerprint.fingerprint(input) == expected)
    }

    @Test func sameShapeSameGroup() {
        #expect(ErrorFingerprint.group(of: "user 1 gone") == ErrorFingerprint.group(of: "user  22 gone"))
        #expect(ErrorFingerprint.group(of: "user 1 gone") != ErrorFingerprint.group(of: "user 1 here"))
        let hex = ErrorFingerprint.hex(ErrorFingerprint.group(of: "x"))
        #expect(hex.count == 16 && hex == hex.lowercased())
        #expect(ErrorFingerprint.parseHex(hex.uppercased()) == ErrorFingerprint.group(of: "x"))
    }

    @Test func manyWordsEachOnce() {
        let distinct = (1...40).map { "w\($0)" }
        let text = (distinct + ["W3", "w17", "w40", "W1"]).joined(separator: " ")
        #expect(ErrorWords.words(text) == distinct)
    }

    @Test func wordsAreUnicodeAwareAndCaseFolded() {
        #expect(ErrorWords.words("Connexion REFUSÉE: hôte_1 injoignable, refusée") == ["connexion", "refusée", "hôte_1", "injoignable"])
    }

    /// The definition, scalar by scalar: maximal runs of letters, digits and `_`,
    /// lower-cased as Unicode says, cut at `maxWordBytes`, each once.
    static func wordsByDefinition(_ text: String) -> [String] {
        var result: [String] = []
        var current = String.UnicodeScalarView()
        func flush() {
            guard !current.isEmpty else { return }
            var w = String(current).lowercased()
            if w.utf8.count > ErrorWords.maxWordBytes { w = String(decoding: w.utf8.prefix(ErrorWords.maxWordBytes), as: UTF8.self) }
            if !result.contains(w) { result.append(w) }
            current = String.UnicodeScalarView()
        }
        for c in text.unicodeScalars {
            if c == "_" || c.properties.isAlphabetic || c.properties.numericType != nil { current.append(c) } else { flush() }
        }
        flush()
        return result
    }

    @Test func theFastWordSplitterAgreesWithTheDefinition() {
        let pieces = ["a", "Z", "q", "7", "_", " ", "-", ":", "\n", "É", "ß", "Σ", "ΟΔΟΣ", "İ", "ǅ", "٣", "½", "日本", "😀", "\u{301}",
                      "Timeout", "REFUSED", String(repeating: "x", count: 199), "é"]
        var rng = SystemRandomNumberGenerator()
        for n in 0..<2000 {
            // Some long enough for more than 16 distinct words (a set takes over from a list).
            let most = n % 4 == 0 ? 80 : 12
            let text = (0..<Int.random(in: 0...most, using: &rng)).map { _ in pieces.randomElement(using: &rng)! }.joined()
            #expect(ErrorWords.words(text) == Self.wordsByDefinition(text), "words of \(text.debugDescription)")
        }
    }

    /// The definition of the fingerprint, scalar by scalar, with Unicode's properties
    /// asked of every character (the implementation until the fast one replaced it:
    /// groups stored by it must come out the same).
    static func fingerprintByDefinition(_ error: String) -> String {
        func isDigit(_ c: Unicode.Scalar) -> Bool { c.value >= 48 && c.value <= 57 }
        func isHex(_ c: Unicode.Scalar) -> Bool { isDigit(c) || (c.value >= 65 && c.value <= 70) || (c.value >= 97 && c.value <= 102) }
        func isWord(_ c: Unicode.Scalar) -> Bool { c == "_" || c.properties.isAlphabetic || c.properties.numericType != nil }
        func isHexID(_ w: ArraySlice<Unicode.Scalar>) -> Bool { w.count >= 8 && w.allSatisfy(isHex) && w.contains(where: isDigit) }
        func isUUID(_ w: ArraySlice<Unicode.Scalar>) -> Bool {
            let groups = w.split(separator: "-", omittingEmptySubsequences: false)
            guard groups.map(\.count) == [8, 4, 4, 4, 12] else { return false }
            return groups.allSatisfy { $0.allSatisfy(isHex) }
        }
        var out = ""
        let scalars = Array(error.unicodeScalars)
        var i = 0
        var pendingSpace = false
        while i < scalars.count {
            let c = scalars[i]
            if c.properties.isWhitespace {
                pendingSpace = !out.isEmpty
                i += 1
                continue
            }
            if pendingSpace { out.append(" "); pendingSpace = false }
            if isWord(c) {
                var j = i
                while j < scalars.count, isWord(scalars[j]) || (scalars[j] == "-" && j + 1 < scalars.count && isHex(scalars[j + 1])) { j += 1 }
                if isUUID(scalars[i..<j]) || isHexID(scalars[i..<j]) {
                    out.append("<id>")
                    i = j
                    continue
                }
                var k = i
                while k < scalars.count, isWord(scalars[k]) { k += 1 }
                if isHexID(scalars[i..<k]) {
                    out.append("<id>")
                    i = k
                    continue
                }
                var m = i
                while m < k {
                    if isDigit(scalars[m]) {
                        while m < k, isDigit(scalars[m]) { m += 1 }
                        out.append("<n>")
                    } else {
                        out.unicodeScalars.append(scalars[m])
                        m += 1
                    }
                }
                i = k
                continue
            }
            if isDigit(c) {
                while i < scalars.count, isDigit(scalars[i]) { i += 1 }
                out.append("<n>")
                continue
            }
            out.unicodeScalars.append(c)
            i += 1
        }
        return out
    }

    @Test func theFastFingerprintAgreesWithTheDefinition() {
        let pieces = ["a", "F", "q", "7", "0", "_", "-", "--", ":", ".", "/", " ", "  ", "\t", "\n", "\r\n", "\u{0B}", "\u{0C}",
                      "\u{1C}", "\u{1F}", "\u{85}", "\u{A0}", "\u{2003}", "\u{3000}", "É", "ß", "Σ", "٣", "½", "日本", "😀", "\u{301}",
                      "deadbeef", "cafe1234", "1a2b3c4d5e", "abcdef12", "ABCDEF", "42", "007",
                      "550e8400-e29b-41d4-a716-446655440000", "550E8400-E29B-41D4-A716-446655440000",
                      "550e8400-e29b-41d4-a716-44665544000", "550e8400e-29b-41d4-a716-446655440000",
                      "550e8400-e29b-41d4-a716-4466554400001", "timeout", "after", "ms"]
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<5000 {
            let text = (0..<Int.random(in: 0...10, using: &rng)).map { _ in pieces.randomElement(using: &rng)! }.joined()
            let expected = Self.fingerprintByDefinition(text)
            #expect(ErrorFingerprint.fingerprint(text) == expected, "fingerprint of \(text.debugDescription)")
        }
        // The group is the FNV-1a hash of the fingerprint's UTF-8.
        for text in ["user 42 not found", "Connexion REFUSÉE à 10:42", "😀 \u{A0}x"] {
            var h: UInt64 = 0xcbf2_9ce4_8422_2325
            for b in Self.fingerprintByDefinition(text).utf8 { h ^= UInt64(b); h = h &* 0x0000_0100_0000_01b3 }
            #expect(ErrorFingerprint.group(of: text) == h)
        }
    }
}
