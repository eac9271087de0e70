import NIOCore
import TortoiseStorage

/// A command a client sends, parsed and checked.
public enum Command: Equatable, Sendable {
    /// `PING`
    case ping
    /// `AUTH <token>`
    case auth(String)
    /// `PUT <queue> <bytes>` + body
    case put(queue: String, payload: ByteBuffer)
    /// `SUB <queue>`
    case sub(String)
    /// `ACK <id>`
    case ack(TaskID)
    /// `NACK <id> <bytes>` + error text
    case nack(TaskID, error: String)
    /// `REQUEUE <id> [<delay_ms>]`
    case requeue(TaskID, delayMillis: UInt64?)
    /// `TOUCH <id>`
    case touch(TaskID)
    /// `STATS`
    case stats
    /// `FAILED <limit> <bytes>` + query
    case failed(limit: Int, query: String)
    /// `REPLAY <bytes>` + query
    case replay(query: String)
    /// `DELETE <bytes>` + query
    case delete(query: String)
    /// `ERRORS <limit> <bytes>` + query
    case errors(limit: Int, query: String)
    /// `QUIT`
    case quit

    /// The verb, as sent on the wire.
    public var verb: String {
        switch self {
        case .ping: "PING"
        case .auth: "AUTH"
        case .put: "PUT"
        case .sub: "SUB"
        case .ack: "ACK"
        case .nack: "NACK"
        case .requeue: "REQUEUE"
        case .touch: "TOUCH"
        case .stats: "STATS"
        case .failed: "FAILED"
        case .replay: "REPLAY"
        case .delete: "DELETE"
        case .errors: "ERRORS"
        case .quit: "QUIT"
        }
    }

    /// Writes the command as a client sends it.
    public func write(to buffer: inout ByteBuffer) {
        func line(_ s: String) { buffer.writeString(s); buffer.writeString("\r\n") }
        func body(_ b: ByteBuffer) { var b = b; buffer.writeBuffer(&b); buffer.writeString("\r\n") }
        func body(_ s: String) { buffer.writeString(s); buffer.writeString("\r\n") }
        switch self {
        case .ping, .stats, .quit: line(verb)
        case .auth(let t): line("AUTH \(t)")
        case let .put(q, p): line("PUT \(q) \(p.readableBytes)"); body(p)
        case .sub(let q): line("SUB \(q)")
        case .ack(let id): line("ACK \(id)")
        case let .nack(id, e): line("NACK \(id) \(e.utf8.count)"); body(e)
        case let .requeue(id, d): line(d.map { "REQUEUE \(id) \($0)" } ?? "REQUEUE \(id)")
        case .touch(let id): line("TOUCH \(id)")
        case let .failed(l, q): line("FAILED \(l) \(q.utf8.count)"); body(q)
        case .replay(let q): line("REPLAY \(q.utf8.count)"); body(q)
        case .delete(let q): line("DELETE \(q.utf8.count)"); body(q)
        case let .errors(l, q): line("ERRORS \(l) \(q.utf8.count)"); body(q)
        }
    }
}
