import NIOCore
import Testing
import TortoiseProtocol
import TortoiseStorage

/// The pure command parser, without sockets: whole, byte by byte, and in random splits.
@Suite struct CommandParserTests {
    /// Parses `input` fed in the given chunk sizes; returns every result.
    func parse(_ input: [UInt8], chunks: [Int]? = nil, maxBody: Int = 1 << 20) -> [Result<Command, ProtocolError>] {
        var parser = CommandParser(maxBody: maxBody)
        var buffer = ByteBuffer()
        var results: [Result<Command, ProtocolError>] = []
        var offset = 0
        var sizes = chunks ?? [input.count]
        while offset < input.count {
            let n = min(sizes.isEmpty ? input.count : sizes.removeFirst(), input.count - offset)
            buffer.writeBytes(input[offset..<offset + n])
            offset += n
            while let r = parser.next(from: &buffer) { results.append(r) }
        }
        return results
    }

    func parse(_ text: String, maxBody: Int = 1 << 20) -> [Result<Command, ProtocolError>] {
        parse(Array(text.utf8), maxBody: maxBody)
    }

    static let session: [UInt8] = Array("""
        PING\r
        AUTH s3cret\r
        PUT emails 5\r
        hello\r
        SUB emails\n\
        ACK 17\r
        NACK 17 10\r
        disk full!\r
        REQUEUE 18\r
        REQUEUE 19 2500\r
        TOUCH 20\r
        STATS\r
        FAILED 10 17\r
        smtp queue:emails\r
        REPLAY 9\r
        nightmare\r
        DELETE 0\r
        \r
        ERRORS 5 0\r
        \r
        QUIT\r

        """.utf8) + Array("PUT bin 4\r\n".utf8) + [0, 13, 10, 255] + Array("\r\n".utf8)

    static let expected: [Command] = [
        .ping, .auth("s3cret"), .put(queue: "emails", payload: ByteBuffer(string: "hello")), .sub("emails"),
        .ack(17), .nack(17, error: "disk full!"), .requeue(18, delayMillis: nil), .requeue(19, delayMillis: 2500),
        .touch(20), .stats, .failed(limit: 10, query: "smtp queue:emails"), .replay(query: "nightmare"),
        .delete(query: ""), .errors(limit: 5, query: ""), .quit,
        .put(queue: "bin", payload: ByteBuffer(bytes: [0, 13, 10, 255])),
    ]

    @Test func everyCommandWhole() {
        let results = parse(Self.session)
        #expect(results.map { try? $0.get() } == Self.expected.map { $0 })
    }

    @Test func everyCommandByteByByte() {
        let results = parse(Self.session, chunks: Array(repeating: 1, count: Self.session.count))
        #expect(results.map { try? $0.get() } == Self.expected.map { $0 })
    }

    @Test(arguments: 0..<50) func everyCommandInRandomSplits(seed: Int) {
        var rng = SystemRandomNumberGenerator()
        let chunks = (0..<Self.session.count).map { _ in Int.random(in: 1...40, using: &rng) }
        let results = parse(Self.session, chunks: chunks)
        #expect(results.map { try? $0.get() } == Self.expected.map { $0 })
    }

    @Test func writtenCommandsParseBack() {
        var buffer = ByteBuffer()
        for c in Self.expected { c.write(to: &buffer) }
        let results = parse(Array(buffer.readableBytesView))
        #expect(results.map { try? $0.get() } == Self.expected.map { $0 })
    }

    func error(_ text: String, maxBody: Int = 1 << 20) -> ProtocolError? {
        guard case .failure(let e)? = parse(text, maxBody: maxBody).first else { return nil }
        return e
    }

    @Test func errorsSayWhatWasWrong() {
        #expect(error("FROB\r\n")?.code == .badCommand)
        #expect(error("put q 1\r\nx\r\n")?.code == .badCommand)
        #expect(error("PING now\r\n")?.message.contains("expected PING") == true)
        #expect(error("ACK twelve\r\n")?.code == .badArgument)
        #expect(error("ACK 99999999999999999999\r\n")?.code == .badArgument)
        #expect(error("SUB a/b\r\n")?.code == .badArgument)
        #expect(error("SUB " + String(repeating: "a", count: 129) + "\r\n")?.code == .badArgument)
        #expect(error("REQUEUE 1 -5\r\n")?.code == .badArgument)
        #expect(error("FAILED 100001 0\r\n\r\n")?.code == .badArgument)
        #expect(error("FAILED 10 2\r\n\u{FF}\r\n") == nil) // 0xFF as a scalar is 2 UTF-8 bytes: valid text
        let invalid = parse(Array("REPLAY 1\r\n".utf8) + [0xFF] + Array("\r\n".utf8))
        if case .failure(let e)? = invalid.first { #expect(e.code == .badArgument) } else { Issue.record("invalid UTF-8 query accepted") }
        #expect(error("\r\n")?.code == .badCommand)
    }

    @Test func aNackWhoseErrorIsNotUTF8IsTakenWithReplacementCharacters() {
        // Refusing it would leave the worker holding a task it cannot fail: the error is
        // kept, each invalid sequence shown as U+FFFD.
        let nack = parse(Array("NACK 7 5\r\n".utf8) + [0x62, 0x61, 0x64, 0xFF, 0x21] + Array("\r\n".utf8))
        #expect(nack.first == .success(.nack(7, error: "bad\u{FFFD}!")))
    }

    @Test func limitsCloseTheConnection() {
        let tooLongLine = error(String(repeating: "A", count: 1024) + "\r\n")
        #expect(tooLongLine?.code == .tooLarge && tooLongLine?.closes == true)
        #expect(error(String(repeating: "A", count: 5000))?.code == .tooLarge, "no newline needed to know")
        #expect(error("PING" + String(repeating: " ", count: 1018) + "\r\n") == nil)
        let body = error("PUT q 11\r\n", maxBody: 10)
        #expect(body?.code == .tooLarge && body?.closes == true)
        #expect(error("PUT q 10\r\n0123456789\r\n", maxBody: 10) == nil)
        let framing = error("PUT q 2\r\nabcd\r\n")
        #expect(framing?.closes == true)
        // Nothing is parsed after a closing error.
        let results = parse("PUT q 99999999\r\nPING\r\n", maxBody: 10)
        #expect(results.count == 1)
    }

    @Test func wordsAreCutAtSpacesOnly() {
        // Runs of spaces, and spaces at either end, separate nothing more.
        #expect(parse("  ACK   17  \r\n").map { try? $0.get() } == [.ack(17)])
        #expect(parse("PUT  q  2\nab\n").map { try? $0.get() } == [.put(queue: "q", payload: ByteBuffer(string: "ab"))])
        // A tab is part of a word, not a separator.
        #expect(error("SUB\tq\r\n")?.message.contains("unknown command") == true)
        #expect(error("ACK 1\t\r\n")?.code == .badArgument)
        // A word that is not UTF-8 is an error about that word, and the next line still parses.
        let results = parse(Array("SUB q".utf8) + [0xC3] + Array("\r\nPING\r\n".utf8))
        #expect(results.count == 2)
        if case .failure(let e)? = results.first { #expect(e.code == .badArgument) } else { Issue.record("a non-UTF-8 queue name was accepted") }
        #expect((try? results.last?.get()) == .ping)
    }

    @Test func aBadCommandWithABodyKeepsTheFraming() {
        let results = parse("PUT bad! 4\r\nPING\r\nPUT q a b 4\r\nPING\r\nPING\r\n")
        #expect(results.count == 3)
        #expect((try? results[2].get()) == .ping)
        if case .failure(let e) = results[1] { #expect(e.code == .badCommand) } else { Issue.record("expected an error") }
    }
}

/// The client side's frame parser.
@Suite struct ServerFrameTests {
    @Test func framesRoundTripInAnySplit() throws {
        let frames: [ServerFrame] = [
            .ok([]), .ok(["PONG"]), .ok(["42"]), .error(code: "NOT_FOUND", message: "task 1 is not held"),
            .json(ByteBuffer(string: "{\"total\":0}")),
            .message(id: 7, queue: "q", delivery: 2, payload: ByteBuffer(bytes: [13, 10, 0, 1])),
            .ok(["1", "", "2"]), .error(code: "BAD_ARGUMENT", message: "two  spaces, kept"), .json(ByteBuffer()),
            .message(id: .max, queue: String(repeating: "q", count: 128), delivery: 0, payload: ByteBuffer()),
            .message(id: 0, queue: "a.b-c:d_e", delivery: 1_000_000, payload: ByteBuffer(string: "MSG 1 q 1 1")),
        ]
        var out = ByteBuffer()
        for f in frames { f.write(to: &out) }
        let bytes = Array(out.readableBytesView)
        for chunk in [1, 2, 3, 7, bytes.count] {
            var parser = ServerFrameParser()
            var buffer = ByteBuffer()
            var got: [ServerFrame] = []
            for start in stride(from: 0, to: bytes.count, by: chunk) {
                buffer.writeBytes(bytes[start..<min(bytes.count, start + chunk)])
                while let f = try parser.next(from: &buffer) { got.append(f) }
            }
            #expect(got == frames, "chunk \(chunk)")
        }
    }

    @Test func framesAreWrittenAsTheContractSpells() {
        func written(_ f: ServerFrame) -> String {
            var out = ByteBuffer()
            f.write(to: &out)
            return String(buffer: out)
        }
        #expect(written(.ok([])) == "OK\r\n")
        #expect(written(.ok(["18446744073709551615"])) == "OK 18446744073709551615\r\n")
        #expect(written(.json(ByteBuffer(string: "{}"))) == "JSON 2\r\n{}\r\n")
        #expect(written(.message(id: .max, queue: "emails", delivery: 10, payload: ByteBuffer(string: "hello")))
                == "MSG 18446744073709551615 emails 10 5\r\nhello\r\n")
        #expect(written(.message(id: 0, queue: "q", delivery: 1, payload: ByteBuffer())) == "MSG 0 q 1 0\r\n\r\n")
        // The broker's path for a payload the store hands out as an array.
        let queue = String(repeating: "z", count: 128)
        var direct = ByteBuffer()
        ServerFrame.writeMessage(id: 9_999_999_999, queue: queue, delivery: 3, payload: Array("a\r\nb".utf8), to: &direct)
        #expect(String(buffer: direct) == written(.message(id: 9_999_999_999, queue: queue, delivery: 3, payload: ByteBuffer(string: "a\r\nb"))))
        #expect(String(buffer: direct) == "MSG 9999999999 \(queue) 3 4\r\na\r\nb\r\n")
    }

    @Test func errorTextsStayOnOneLine() throws {
        var out = ByteBuffer()
        ServerFrame.error(code: "INTERNAL", message: "two\r\nlines").write(to: &out)
        #expect(out.readableBytesView.filter { $0 == 10 }.count == 1)
    }
}
