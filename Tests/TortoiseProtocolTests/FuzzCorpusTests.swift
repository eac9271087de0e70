import Foundation
import NIOCore
import Testing
import TortoiseProtocol
import TortoiseStorage

/// Replays the fuzzers' corpora (Fuzz/Corpus) with the fuzzers' own checks, so that every
/// input they ever found interesting stays a regression test.
@Suite struct FuzzCorpusTests {
    static let corpus = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz/Corpus")

    static func inputs(_ fuzzer: String) -> [[UInt8]] {
        let dir = corpus.appendingPathComponent(fuzzer)
        let files = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return files.sorted().compactMap { FileManager.default.contents(atPath: dir.appendingPathComponent($0).path).map { Array($0) } }
    }

    @Test func commandParserCorpus() {
        let inputs = Self.inputs("FuzzCommandParser")
        #expect(inputs.count >= 2)
        for bytes in inputs {
            let cut = bytes.isEmpty ? 0 : Int(bytes[0]) % (bytes.count + 1)
            let whole = CommandParser.transcript(of: [bytes[...]])
            #expect(whole == CommandParser.transcript(of: [bytes[..<cut], bytes[cut...]]))
            #expect(whole == CommandParser.transcript(of: [bytes[...]], fastPath: false))
        }
    }

    @Test func queryParserCorpus() {
        let inputs = Self.inputs("FuzzQueryParser")
        #expect(inputs.count >= 2)
        for bytes in inputs {
            let text = String(decoding: bytes, as: UTF8.self)
            switch QueryParser.parse(text, now: 1_800_000_000_000) {
            case .success(let q):
                let task = FailedTask(id: 1, queue: "q", error: text, group: ErrorFingerprint.group(of: text),
                                      deliveries: 1, replays: 0, failedAt: 1_800_000_000_000, payload: bytes)
                _ = q.matches(task)
            case .failure(let e):
                #expect(e.code == .badArgument && e.message.hasPrefix("query error at character "))
            }
        }
    }
}
