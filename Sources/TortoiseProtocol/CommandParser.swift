import NIOCore
import TortoiseStorage

/// The incremental parser of client commands: pure, no I/O. Feed it whatever bytes have
/// arrived, in any split; each call to ``next(from:)`` returns one parsed command or
/// error, or nil when it needs more bytes. After an error that closes the connection it
/// returns nothing more.
public struct CommandParser: Sendable {
    /// The largest body accepted.
    public let maxBody: Int
    /// Whether well-formed lines of the commands sent most (`PUT`, `ACK`, `NACK`,
    /// `REQUEUE`, `TOUCH`, `SUB`) are read straight from the bytes; any other line, and
    /// any that is not plainly well-formed, takes the general path. Off only in tests,
    /// which check that both give the same result for every line.
    let fastPath: Bool
    private var pending: PendingBody?
    private var stopped = false

    private struct PendingBody: Sendable {
        var verb: String
        var args: [String]
        var length: Int
        var deferred: ProtocolError?
        /// Set by the fast path: what the body completes (`verb` and `args` are unused).
        var fast: FastBody?
    }

    private enum FastBody: Sendable {
        case put(queue: String)
        case nack(TaskID)
    }

    /// A parser that accepts bodies of up to `maxBody` bytes.
    public init(maxBody: Int = Wire.defaultMaxBody) {
        self.init(maxBody: maxBody, fastPath: true)
    }

    init(maxBody: Int, fastPath: Bool) {
        self.maxBody = maxBody
        self.fastPath = fastPath
    }

    /// How many bytes the body being read still needs in all (0 between commands): a
    /// reader that bounds its buffer must allow at least this much.
    public var bodyBytesWanted: Int { pending.map { $0.length + 2 } ?? 0 }

    /// The next command or error from `buffer`, consuming its bytes; nil when incomplete.
    public mutating func next(from buffer: inout ByteBuffer) -> Result<Command, ProtocolError>? {
        if stopped { return nil }
        let result: Result<Command, ProtocolError>?
        if let p = pending {
            result = readBody(p, &buffer)
        } else {
            result = readLine(&buffer)
        }
        if case .failure(let e) = result, e.closes { stopped = true }
        return result
    }

    private mutating func readLine(_ buffer: inout ByteBuffer) -> Result<Command, ProtocolError>? {
        if fastPath {
            let maxBody = maxBody
            switch buffer.withUnsafeReadableBytes({ Self.fastLine($0, maxBody: maxBody) }) {
            case .command(let command, let length):
                buffer.moveReaderIndex(forwardBy: length)
                return .success(command)
            case .body(let fast, let size, let length):
                buffer.moveReaderIndex(forwardBy: length)
                let p = PendingBody(verb: "", args: [], length: size, deferred: nil, fast: fast)
                pending = p
                return readBody(p, &buffer)
            case .general:
                break
            }
        }
        let line: (words: [String], length: Int)? = buffer.withUnsafeReadableBytes { raw in
            guard let nl = raw.prefix(Wire.maxLine).firstIndex(of: UInt8(ascii: "\n")) else { return nil }
            return (Wire.words(UnsafeRawBufferPointer(rebasing: raw[..<nl]), omittingEmpty: true), nl + 1)
        }
        guard let (words, length) = line else {
            if buffer.readableBytes >= Wire.maxLine {
                return .failure(ProtocolError(.tooLarge, "line longer than \(Wire.maxLine) bytes"))
            }
            return nil
        }
        buffer.moveReaderIndex(forwardBy: length)
        guard let verb = words.first else {
            return .failure(ProtocolError(.badCommand, "empty line: expected a command such as PING"))
        }
        return parse(verb: verb, args: Array(words.dropFirst()), &buffer)
    }

    /// The words a command with a body takes (the last is the body's size). A switch,
    /// not a dictionary: no hashing of the verb on every line.
    private static func bodyArgs(_ verb: String) -> Int? {
        switch verb {
        case "PUT", "NACK", "FAILED", "ERRORS": 2
        case "REPLAY", "DELETE": 1
        default: nil
        }
    }

    /// The words a command without a body takes.
    private static func lineArgs(_ verb: String) -> ClosedRange<Int>? {
        switch verb {
        case "ACK", "SUB", "TOUCH", "AUTH": 1...1
        case "PING", "STATS", "QUIT": 0...0
        case "REQUEUE": 1...2
        default: nil
        }
    }

    private static let usage: [String: String] = [
        "PING": "PING", "AUTH": "AUTH <token>", "PUT": "PUT <queue> <bytes>", "SUB": "SUB <queue>",
        "ACK": "ACK <id>", "NACK": "NACK <id> <bytes>", "REQUEUE": "REQUEUE <id> [<delay_ms>]",
        "TOUCH": "TOUCH <id>", "STATS": "STATS", "FAILED": "FAILED <limit> <bytes>",
        "REPLAY": "REPLAY <bytes>", "DELETE": "DELETE <bytes>", "ERRORS": "ERRORS <limit> <bytes>", "QUIT": "QUIT",
    ]

    private mutating func parse(verb: String, args: [String], _ buffer: inout ByteBuffer) -> Result<Command, ProtocolError>? {
        if let want = Self.bodyArgs(verb) {
            // The last word is the body's size; read the body even when the rest is wrong,
            // so that the next command starts where it should.
            guard let last = args.last else {
                return .failure(ProtocolError(.badCommand, "wrong number of words: expected \(Self.usage[verb]!)"))
            }
            guard let n = Self.number(last) else {
                if args.count != want {
                    return .failure(ProtocolError(.badCommand, "wrong number of words: expected \(Self.usage[verb]!)"))
                }
                return .failure(ProtocolError(.badArgument, "body size '\(Self.clip(last))' is not a number of bytes"))
            }
            if n > UInt64(maxBody) {
                return .failure(ProtocolError(.tooLarge, "body of \(n) bytes is over the limit of \(maxBody) bytes"))
            }
            var deferred: ProtocolError?
            if args.count != want {
                deferred = ProtocolError(.badCommand, "wrong number of words: expected \(Self.usage[verb]!)")
            }
            pending = PendingBody(verb: verb, args: Array(args.dropLast()), length: Int(n), deferred: deferred)
            return readBody(pending!, &buffer)
        }
        guard let range = Self.lineArgs(verb) else {
            return .failure(ProtocolError(.badCommand, "unknown command '\(Self.clip(verb))'"))
        }
        guard range.contains(args.count) else {
            return .failure(ProtocolError(.badCommand, "wrong number of words: expected \(Self.usage[verb]!)"))
        }
        switch verb {
        case "PING": return .success(.ping)
        case "STATS": return .success(.stats)
        case "QUIT": return .success(.quit)
        case "AUTH": return .success(.auth(args[0]))
        case "SUB":
            return Self.name(args[0]).map { .sub($0) }
        case "ACK": return Self.id(args[0]).map { .ack($0) }
        case "TOUCH": return Self.id(args[0]).map { .touch($0) }
        case "REQUEUE":
            return Self.id(args[0]).flatMap { id in
                guard args.count == 2 else { return .success(.requeue(id, delayMillis: nil)) }
                guard let d = Self.number(args[1]) else {
                    return .failure(ProtocolError(.badArgument, "delay '\(Self.clip(args[1]))' is not a number of milliseconds"))
                }
                return .success(.requeue(id, delayMillis: d))
            }
        default:
            return .failure(ProtocolError(.badCommand, "unknown command '\(Self.clip(verb))'"))
        }
    }

    private mutating func readBody(_ p: PendingBody, _ buffer: inout ByteBuffer) -> Result<Command, ProtocolError>? {
        guard buffer.readableBytes > p.length else { return nil }
        let after = buffer.getInteger(at: buffer.readerIndex + p.length, as: UInt8.self)!
        var terminator = 1
        if after == UInt8(ascii: "\r") {
            guard buffer.readableBytes >= p.length + 2 else { return nil }
            guard buffer.getInteger(at: buffer.readerIndex + p.length + 1, as: UInt8.self) == UInt8(ascii: "\n") else {
                return .failure(ProtocolError(.badArgument, "the \(p.length)-byte body is not followed by \\r\\n; closing, as framing is lost", closes: true))
            }
            terminator = 2
        } else if after != UInt8(ascii: "\n") {
            return .failure(ProtocolError(.badArgument, "the \(p.length)-byte body is not followed by \\r\\n; closing, as framing is lost", closes: true))
        }
        let body = buffer.readSlice(length: p.length)!
        buffer.moveReaderIndex(forwardBy: terminator)
        pending = nil
        if let e = p.deferred { return .failure(e) }
        return build(p, body)
    }

    private func build(_ p: PendingBody, _ body: ByteBuffer) -> Result<Command, ProtocolError> {
        switch p.fast {
        case .put(let queue): return .success(.put(queue: queue, payload: body))
        case .nack(let id): return .success(.nack(id, error: String(decoding: body.readableBytesView, as: UTF8.self)))
        case nil: break
        }
        func text(_ what: String) -> Result<String, ProtocolError> {
            guard let s = body.getString(at: body.readerIndex, length: body.readableBytes),
                  s.utf8.elementsEqual(body.readableBytesView) else {
                return .failure(ProtocolError(.badArgument, "\(what) is not valid UTF-8"))
            }
            return .success(s)
        }
        func limit(_ w: String) -> Result<Int, ProtocolError> {
            guard let n = Self.number(w), n <= UInt64(Wire.maxLimit) else {
                return .failure(ProtocolError(.badArgument, "limit '\(Self.clip(w))' is not a number from 0 to \(Wire.maxLimit)"))
            }
            return .success(Int(n))
        }
        switch p.verb {
        case "PUT":
            return Self.name(p.args[0]).map { .put(queue: $0, payload: body) }
        case "NACK":
            return Self.id(p.args[0]).map { .nack($0, error: String(decoding: body.readableBytesView, as: UTF8.self)) }
        case "FAILED":
            return limit(p.args[0]).flatMap { l in text("the query").map { .failed(limit: l, query: $0) } }
        case "ERRORS":
            return limit(p.args[0]).flatMap { l in text("the query").map { .errors(limit: l, query: $0) } }
        case "REPLAY":
            return text("the query").map { .replay(query: $0) }
        default:
            return text("the query").map { .delete(query: $0) }
        }
    }

    static func number(_ w: String) -> UInt64? {
        guard !w.isEmpty, w.utf8.count <= 20, w.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        return UInt64(w)
    }

    static func id(_ w: String) -> Result<TaskID, ProtocolError> {
        guard let n = number(w) else { return .failure(ProtocolError(.badArgument, "id '\(clip(w))' is not a decimal number")) }
        return .success(n)
    }

    static func name(_ w: String) -> Result<String, ProtocolError> {
        guard Wire.isValidName(w) else {
            return .failure(ProtocolError(.badArgument, "queue name '\(clip(w))' is not 1 to \(Wire.maxNameLength) of A-Z a-z 0-9 . _ - :"))
        }
        return .success(w)
    }

    // MARK: Fast path

    private enum FastLine {
        /// A whole command, and the bytes of its line.
        case command(Command, Int)
        /// A command whose body follows: what it is, the body's size, the bytes of its line.
        case body(FastBody, Int, Int)
        /// Not a plainly well-formed line of a command the fast path knows (or no whole
        /// line yet): the general path decides.
        case general
    }

    /// Reads a well-formed `PUT`, `NACK`, `ACK`, `TOUCH`, `REQUEUE` or `SUB` line without
    /// making a String of every word: single spaces, decimal numbers of at most 19 digits,
    /// valid queue names. Anything else is left to the general path, which gives the
    /// same result for these lines (`FastPathTests` and `FuzzCorpusTests` check it) and the errors.
    private static func fastLine(_ raw: UnsafeRawBufferPointer, maxBody: Int) -> FastLine {
        guard let nl = raw.prefix(Wire.maxLine).firstIndex(of: UInt8(ascii: "\n")) else { return .general }
        var end = nl
        if end > 0 && raw[end - 1] == UInt8(ascii: "\r") { end -= 1 }
        // Up to four words, cut at single spaces; an empty word (two spaces, or one at
        // either end) goes to the general path.
        var starts = (0, 0, 0, 0)
        var ends = (0, 0, 0, 0)
        var count = 0
        var start = 0
        var i = 0
        while i <= end {
            if i == end || raw[i] == UInt8(ascii: " ") {
                guard i > start, count < 4 else { return .general }
                switch count {
                case 0: starts.0 = start; ends.0 = i
                case 1: starts.1 = start; ends.1 = i
                case 2: starts.2 = start; ends.2 = i
                default: starts.3 = start; ends.3 = i
                }
                count += 1
                start = i + 1
            }
            i += 1
        }
        func word(_ k: Int) -> UnsafeRawBufferPointer {
            switch k {
            case 0: UnsafeRawBufferPointer(rebasing: raw[starts.0..<ends.0])
            case 1: UnsafeRawBufferPointer(rebasing: raw[starts.1..<ends.1])
            case 2: UnsafeRawBufferPointer(rebasing: raw[starts.2..<ends.2])
            default: UnsafeRawBufferPointer(rebasing: raw[starts.3..<ends.3])
            }
        }
        let line = nl + 1
        let verb = word(0)
        switch (verb.count, verb.first!) {
        case (3, UInt8(ascii: "A")) where count == 2 && spells(verb, "ACK"):
            guard let id = number(word(1)) else { return .general }
            return .command(.ack(id), line)
        case (3, UInt8(ascii: "P")) where count == 3 && spells(verb, "PUT"):
            guard let queue = name(word(1)), let size = number(word(2)), size <= UInt64(maxBody) else { return .general }
            return .body(.put(queue: queue), Int(size), line)
        case (4, UInt8(ascii: "N")) where count == 3 && spells(verb, "NACK"):
            guard let id = number(word(1)), let size = number(word(2)), size <= UInt64(maxBody) else { return .general }
            return .body(.nack(id), Int(size), line)
        case (7, UInt8(ascii: "R")) where (count == 2 || count == 3) && spells(verb, "REQUEUE"):
            guard let id = number(word(1)) else { return .general }
            guard count == 3 else { return .command(.requeue(id, delayMillis: nil), line) }
            guard let delay = number(word(2)) else { return .general }
            return .command(.requeue(id, delayMillis: delay), line)
        case (5, UInt8(ascii: "T")) where count == 2 && spells(verb, "TOUCH"):
            guard let id = number(word(1)) else { return .general }
            return .command(.touch(id), line)
        case (3, UInt8(ascii: "S")) where count == 2 && spells(verb, "SUB"):
            guard let queue = name(word(1)) else { return .general }
            return .command(.sub(queue), line)
        default:
            return .general
        }
    }

    private static func spells(_ word: UnsafeRawBufferPointer, _ verb: StaticString) -> Bool {
        word.count == verb.utf8CodeUnitCount
            && word.elementsEqual(UnsafeRawBufferPointer(start: verb.utf8Start, count: verb.utf8CodeUnitCount))
    }

    /// 1 to 19 decimal digits (always within UInt64); otherwise nil.
    private static func number(_ word: UnsafeRawBufferPointer) -> UInt64? {
        guard word.count <= 19 else { return nil }
        var n: UInt64 = 0
        for b in word {
            guard b >= 0x30 && b <= 0x39 else { return nil }
            n = n &* 10 &+ UInt64(b &- 0x30)
        }
        return n
    }

    private static func name(_ word: UnsafeRawBufferPointer) -> String? {
        guard word.count <= Wire.maxNameLength, Wire.isValidName(word) else { return nil }
        return String(decoding: word, as: UTF8.self)
    }

    /// A word cut short for an error message, with anything but printable ASCII escaped.
    static func clip(_ w: String) -> String {
        var out = ""
        for s in w.unicodeScalars.prefix(40) {
            if s.value >= 0x20 && s.value < 0x7F { out.unicodeScalars.append(s) } else { out += "\\u{\(String(s.value, radix: 16))}" }
        }
        return w.unicodeScalars.count > 40 ? out + "..." : out
    }
}
