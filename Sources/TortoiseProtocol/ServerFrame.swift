import NIOCore
import TortoiseStorage

/// A frame the server sends.
public enum ServerFrame: Equatable, Sendable {
    /// `OK[ <word>...]`
    case ok([String])
    /// `ERR <CODE> <text>`
    case error(code: String, message: String)
    /// `JSON <bytes>` + body
    case json(ByteBuffer)
    /// `MSG <id> <queue> <delivery> <bytes>` + body
    case message(id: TaskID, queue: String, delivery: Int, payload: ByteBuffer)

    /// Writes the frame as the server sends it. The headers of the frames sent for
    /// every task (`OK`, `MSG`) are written without an interpolated String, which was
    /// about 6% of the event loop's instructions.
    public func write(to buffer: inout ByteBuffer) {
        switch self {
        case .ok(let words):
            buffer.writeStaticString("OK")
            for w in words {
                buffer.writeInteger(UInt8(ascii: " "))
                buffer.writeString(w)
            }
            buffer.writeStaticString("\r\n")
        case let .error(code, message):
            // A reply is one line: keep the text on it.
            let text = message.replacingOccurrences(of: "\r", with: " ").replacingOccurrences(of: "\n", with: " ")
            buffer.writeString("ERR \(code) \(text)\r\n")
        case .json(let body):
            var b = body
            Self.writeJSONHeader(length: b.readableBytes, to: &buffer)
            buffer.writeBuffer(&b)
            buffer.writeStaticString("\r\n")
        case let .message(id, queue, delivery, payload):
            var p = payload
            Self.writeMessageHeader(id: id, queue: queue, delivery: delivery, length: p.readableBytes, to: &buffer)
            buffer.writeBuffer(&p)
            buffer.writeStaticString("\r\n")
        }
    }

    /// `JSON <bytes>\r\n`: the head of a `JSON` frame, also of one whose body is sent
    /// from a spool file.
    public static func writeJSONHeader(length: Int, to buffer: inout ByteBuffer) {
        buffer.writeString("JSON \(length)\r\n")
    }

    /// Writes a `MSG` frame whose payload is in an array (as the store hands it out),
    /// without first making a `ByteBuffer` of it.
    public static func writeMessage(id: TaskID, queue: String, delivery: Int, payload: [UInt8], to buffer: inout ByteBuffer) {
        writeMessageHeader(id: id, queue: queue, delivery: delivery, length: payload.count, to: &buffer)
        buffer.writeBytes(payload)
        buffer.writeStaticString("\r\n")
    }

    /// `MSG <id> <queue> <delivery> <bytes>\r\n`, written in one step: a task's header
    /// is written for every delivery, and each of NIO's small writes checks and grows
    /// the buffer on its own.
    private static func writeMessageHeader(id: TaskID, queue: String, delivery: Int, length: Int, to buffer: inout ByteBuffer) {
        var queue = queue
        queue.withUTF8 { name in
            // "MSG " + 3 numbers of at most 20 digits + 3 spaces + "\r\n".
            _ = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: name.count + 69) { out in
                var at = 0
                func byte(_ b: UInt8) { out[at] = b; at += 1 }
                func decimal(_ value: UInt64) {
                    var v = value
                    var digits = 0
                    repeat { digits += 1; v /= 10 } while v > 0
                    v = value
                    for i in stride(from: at + digits - 1, through: at, by: -1) {
                        out[i] = UInt8(ascii: "0") + UInt8(v % 10)
                        v /= 10
                    }
                    at += digits
                }
                for b in "MSG ".utf8 { byte(b) }
                decimal(id)
                byte(UInt8(ascii: " "))
                UnsafeMutableRawBufferPointer(rebasing: out[at..<at + name.count]).copyMemory(from: UnsafeRawBufferPointer(name))
                at += name.count
                byte(UInt8(ascii: " "))
                decimal(UInt64(clamping: delivery))
                byte(UInt8(ascii: " "))
                decimal(UInt64(length))
                byte(UInt8(ascii: "\r"))
                byte(UInt8(ascii: "\n"))
                return at
            }
        }
    }

    /// An `ERR` frame for `error`.
    public static func error(_ error: ProtocolError) -> ServerFrame {
        .error(code: error.code.rawValue, message: error.message)
    }
}

/// The client side's incremental parser of server frames: pure, no I/O.
public struct ServerFrameParser: Sendable {
    private var pendingHeader: [String]?
    private var pendingLength = 0

    /// A new parser.
    public init() {}

    /// A frame the server sent that the client cannot read.
    public struct Malformed: Error, Equatable, Sendable {
        /// What was wrong.
        public var message: String
    }

    /// The next frame from `buffer`, or nil when incomplete.
    public mutating func next(from buffer: inout ByteBuffer) throws(Malformed) -> ServerFrame? {
        if pendingHeader == nil {
            let view = buffer.readableBytesView
            guard let nl = view.firstIndex(of: UInt8(ascii: "\n")) else {
                if view.count > 64 * 1024 { throw Malformed(message: "server line too long") }
                return nil
            }
            let length = nl - view.startIndex + 1
            let words = buffer.withUnsafeReadableBytes { raw in Wire.words(UnsafeRawBufferPointer(rebasing: raw[..<(length - 1)]), omittingEmpty: false) }
            buffer.moveReaderIndex(forwardBy: length)
            // The line again, for an error message only.
            func line() -> String { words.joined(separator: " ") }
            switch words.first {
            case "OK":
                return .ok(Array(words.dropFirst()))
            case "ERR":
                guard words.count >= 2 else { throw Malformed(message: "ERR without a code") }
                return .error(code: words[1], message: words.dropFirst(2).joined(separator: " "))
            case "JSON" where words.count == 2, "MSG" where words.count == 5:
                guard let n = Int(words.last!), n >= 0 else { throw Malformed(message: "bad body size in '\(line().prefix(80))'") }
                pendingHeader = words
                pendingLength = n
            default:
                throw Malformed(message: "unexpected frame '\(line().prefix(80))'")
            }
        }
        guard buffer.readableBytes >= pendingLength + 2 else { return nil }
        let body = buffer.readSlice(length: pendingLength)!
        let end = buffer.readBytes(length: 2)!
        guard end == [13, 10] else { throw Malformed(message: "body not followed by \\r\\n") }
        let header = pendingHeader!
        pendingHeader = nil
        if header[0] == "JSON" { return .json(body) }
        guard let id = TaskID(header[1]), let delivery = Int(header[3]) else {
            throw Malformed(message: "bad MSG header '\(header.joined(separator: " "))'")
        }
        return .message(id: id, queue: header[2], delivery: delivery, payload: body)
    }
}
