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
        for _ in 0..<2000 {
            let text = (0..<Int.random(in: 0...12, using: &rng)).map { _ in pieces.randomElement(using: &rng)! }.joined()
            #expect(ErrorWords.words(text) == Self.wordsByDefinition(text), "words of \(text.debugDescription)")
        }
    }
}
