import TortoiseProtocol

/// The one error type of the client library: a code to switch on and a message.
public struct TortoiseClientError: Error, CustomStringConvertible, Equatable, Sendable {
    /// What kind of failure it was.
    public enum Code: Equatable, Sendable {
        /// The broker could not be reached.
        case connectionFailed
        /// The connection dropped before the reply came: the command may or may not have
        /// taken effect.
        case connectionLost
        /// The broker answered `ERR <code>`; the raw code is kept.
        case server(String)
        /// The broker sent something this library cannot read.
        case protocolViolation
        /// A bad argument, refused before anything was sent.
        case badArgument
        /// The client was closed.
        case closed
    }

    /// What kind of failure it was.
    public var code: Code
    /// A sentence for a person.
    public var message: String

    /// Makes an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// The message, with the server's code in front when there is one.
    public var description: String {
        if case .server(let c) = code { return "\(c): \(message)" }
        return message
    }

    /// Whether the server refused the token (or wants one).
    public var isAuthenticationError: Bool { code == .server(ErrorCode.denied.rawValue) || code == .server(ErrorCode.noAuth.rawValue) }
}
