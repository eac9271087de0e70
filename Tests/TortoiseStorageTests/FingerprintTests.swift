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
}
