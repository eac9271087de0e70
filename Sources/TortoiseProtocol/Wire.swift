/// The words, limits and defaults of protocol v1, defined once (see docs/protocol.md).
public enum Wire {
    /// The default port.
    public static let defaultPort = 7654
    /// The default listen address.
    public static let defaultHost = "127.0.0.1"
    /// The longest line, terminator included.
    public static let maxLine = 1024
    /// The default `--max-body`.
    public static let defaultMaxBody = 1 << 20
    /// The longest queue name.
    public static let maxNameLength = 128
    /// The most tasks or groups one `FAILED` or `ERRORS` may ask for.
    public static let maxLimit = 100_000

    /// Whether `name` is a valid queue name: 1 to 128 bytes of `A-Z a-z 0-9 . _ - :`.
    public static func isValidName(_ name: some StringProtocol) -> Bool {
        isValidName(name.utf8)
    }

    static func isValidName(_ u: some Collection<UInt8>) -> Bool {
        guard !u.isEmpty, u.count <= maxNameLength else { return false }
        return u.allSatisfy { b in
            (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39)
                || b == 0x2E || b == 0x5F || b == 0x2D || b == 0x3A
        }
    }

    /// The words of a line (without its `\n`; a `\r` before it is dropped), cut at
    /// single spaces as the protocol defines them, byte by byte: no Unicode segmentation
    /// on the hottest path of both sides. Bytes that are not UTF-8 become U+FFFD.
    static func words(_ line: UnsafeRawBufferPointer, omittingEmpty: Bool) -> [String] {
        var end = line.count
        if end > 0 && line[end - 1] == UInt8(ascii: "\r") { end -= 1 }
        var words: [String] = []
        var start = 0
        for i in 0...end where i == end || line[i] == UInt8(ascii: " ") {
            if i > start || !omittingEmpty {
                words.append(String(decoding: UnsafeRawBufferPointer(rebasing: line[start..<i]), as: UTF8.self))
            }
            start = i + 1
        }
        return words
    }
}

/// The error codes of `ERR` replies.
public enum ErrorCode: String, Sendable, CaseIterable {
    /// Unknown verb or wrong word count.
    case badCommand = "BAD_COMMAND"
    /// A malformed name, id, number or query.
    case badArgument = "BAD_ARGUMENT"
    /// A line or body over the limit; the server closes the connection.
    case tooLarge = "TOO_LARGE"
    /// No such task held by this connection.
    case notFound = "NOT_FOUND"
    /// Authentication required.
    case noAuth = "NOAUTH"
    /// Wrong token.
    case denied = "DENIED"
    /// The worker held its task past the ack timeout; the server closes the connection.
    case timeout = "TIMEOUT"
    /// The server failed; nothing was changed.
    case `internal` = "INTERNAL"

    /// Whether the server closes the connection after sending this code.
    public var closesConnection: Bool { self == .tooLarge || self == .timeout }
}

/// An `ERR` reply: a code and a text for a person.
public struct ProtocolError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The code.
    public var code: ErrorCode
    /// What was wrong.
    public var message: String
    /// Whether the connection must close after this reply (framing is lost).
    public var closes: Bool

    /// Makes an error; `closes` defaults to what the code says.
    public init(_ code: ErrorCode, _ message: String, closes: Bool? = nil) {
        self.code = code
        self.message = message
        self.closes = closes ?? code.closesConnection
    }

    /// `CODE text`.
    public var description: String { "\(code.rawValue) \(message)" }
}
