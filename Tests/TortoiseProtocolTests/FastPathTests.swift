import NIOCore
import Testing
@testable import TortoiseProtocol
import TortoiseTestSupport

/// The parser's fast path (well-formed `PUT`, `NACK`, `ACK`, `TOUCH`, `REQUEUE`, `SUB`
/// lines read straight from the bytes) must give what the general path gives, for every
/// line: the same commands, the same errors, the same framing after them.
@Suite struct FastPathTests {
    /// Lines made of the pieces the two paths could disagree on: the fast path's verbs and
    /// others, numbers around 19 and 20 digits and UInt64's limit, names valid and not (too
    /// long, bad bytes, not UTF-8), one space or two or one at an end, `\r` or none, bodies
    /// of the size stated and not.
    static func randomInput(_ rng: inout SeededGenerator) -> [UInt8] {
        func pick<T>(_ items: [T]) -> T { items[Int.random(in: 0..<items.count, using: &rng)] }
        let verbs = ["PUT", "NACK", "ACK", "TOUCH", "REQUEUE", "SUB", "PING", "STATS", "ack", "PUTS", "AC", "SUBS", "REPLAY", "FAILED"]
        let numbers = ["0", "7", "007", "42", "100", "1048576", "1048577", "9999999999999999999", "10000000000000000000",
                       "18446744073709551615", "18446744073709551616", "123456789012345678901", "-1", "1x", "", "+5"]
        let names = ["q", "emails", "a.b_c-d:e", String(repeating: "n", count: 128), String(repeating: "n", count: 129),
                     "bad name", "bad/name", "ünï", "q\t", "Q9"]
        var out: [UInt8] = []
        for _ in 0..<Int.random(in: 1...6, using: &rng) {
            var words = [pick(verbs)]
            // Half the lines have the shape of the verb's command (right word count, number
            // or name where one goes), whatever the words' values; the rest are any words.
            let shapes: [String: String] = ["PUT": "NS", "NACK": "SS", "ACK": "S", "TOUCH": "S", "SUB": "N", "REQUEUE": "S"]
            if Bool.random(using: &rng), var shape = shapes[words[0]] {
                if words[0] == "REQUEUE" && Bool.random(using: &rng) { shape += "S" }
                for kind in shape { words.append(kind == "N" ? pick(names) : pick(numbers)) }
            } else {
                for _ in 0..<Int.random(in: 0...3, using: &rng) {
                    words.append(Bool.random(using: &rng) ? pick(numbers) : pick(names))
                }
            }
            let sep = Int.random(in: 0..<10, using: &rng) == 0 ? "  " : " "
            var line = Array(words.joined(separator: sep).utf8)
            switch Int.random(in: 0..<12, using: &rng) {
            case 0: line.insert(0x20, at: 0)
            case 1: line.append(0x20)
            case 2: line.append(0xFF)
            case 3: line.append(UInt8(ascii: "\r"))
            default: break
            }
            out += line
            out += Bool.random(using: &rng) ? Array("\r\n".utf8) : [UInt8(ascii: "\n")]
            // A body: the size the last word states (if a small number), or some other.
            let stated = max(0, Int(words.last!) ?? 0)
            let size = stated <= 64 && Bool.random(using: &rng) ? stated : Int.random(in: 0...8, using: &rng)
            if Int.random(in: 0..<3, using: &rng) > 0 {
                out += (0..<size).map { _ in UInt8.random(in: 0x61...0x7A, using: &rng) }
                out += pick([Array("\r\n".utf8), [UInt8(ascii: "\n")], Array("xx".utf8)])
            }
        }
        return out
    }

    static func parse(_ input: [UInt8], fastPath: Bool, maxBody: Int, chunk: Int) -> [Result<Command, ProtocolError>] {
        var parser = CommandParser(maxBody: maxBody, fastPath: fastPath)
        var buffer = ByteBuffer()
        var results: [Result<Command, ProtocolError>] = []
        var offset = 0
        while offset < input.count {
            let n = min(chunk, input.count - offset)
            buffer.writeBytes(input[offset..<offset + n])
            offset += n
            while let r = parser.next(from: &buffer) { results.append(r) }
        }
        return results
    }

    @Test func bothPathsGiveTheSameResultForEveryLine() {
        var rng = SeededGenerator(seed: 11)
        var fastCommands = 0
        var reached: Set<String> = []
        for round in 0..<2000 {
            let input = Self.randomInput(&rng)
            let maxBody = Bool.random(using: &rng) ? 1 << 20 : 50
            let chunk = Bool.random(using: &rng) ? input.count : Int.random(in: 1...7, using: &rng)
            let fast = Self.parse(input, fastPath: true, maxBody: maxBody, chunk: chunk)
            let general = Self.parse(input, fastPath: false, maxBody: maxBody, chunk: chunk)
            if fast != general {
                Issue.record("round \(round): \(String(decoding: input, as: UTF8.self).debugDescription)\nfast:    \(fast)\ngeneral: \(general)")
                return
            }
            for case .success(let c) in fast {
                switch c {
                case .put: reached.insert("PUT")
                case .nack: reached.insert("NACK")
                case .ack: reached.insert("ACK")
                case .touch: reached.insert("TOUCH")
                case .sub: reached.insert("SUB")
                case .requeue(_, nil): reached.insert("REQUEUE")
                case .requeue: reached.insert("REQUEUE delay")
                default: continue
                }
                fastCommands += 1
            }
        }
        // The inputs reach every command of the fast path, and often, not only errors.
        #expect(reached.count == 7 && fastCommands > 300, "\(fastCommands) commands: \(reached.sorted())")
    }

    @Test func theFastPathReadsTheCommandsItKnows() {
        let input = Array("PUT q 5\r\nhello\r\nACK 18446744073709551\r\nNACK 3 4\nboom\nREQUEUE 4 250\r\nREQUEUE 5\nTOUCH 6\r\nSUB a:b\r\n".utf8)
        let results = Self.parse(input, fastPath: true, maxBody: 1 << 20, chunk: input.count)
        let expected: [Command] = [
            .put(queue: "q", payload: ByteBuffer(string: "hello")), .ack(18_446_744_073_709_551), .nack(3, error: "boom"),
            .requeue(4, delayMillis: 250), .requeue(5, delayMillis: nil), .touch(6), .sub("a:b"),
        ]
        #expect(results == expected.map { .success($0) })
    }
}
