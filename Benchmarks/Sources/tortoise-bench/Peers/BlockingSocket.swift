import Foundation

/// A blocking TCP connection to 127.0.0.1 with buffered reads: the load generator gives
/// each producer and worker its own thread and connection, the same for every broker.
final class BlockingSocket: @unchecked Sendable { // each one is used by one thread at a time
    let fd: Int32
    private var buffer = [UInt8](repeating: 0, count: 1 << 16)
    private var start = 0
    private var end = 0
    private var readTimeout = 0.0

    struct Failure: Error, CustomStringConvertible { var description: String }

    init(port: Int) throws {
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        // Only a connected socket becomes `fd`: a throw after `fd` is set would run
        // deinit, whose close would then close a descriptor someone else has by then.
        if rc != 0 { close(s); throw Failure(description: "cannot connect to 127.0.0.1:\(port)") }
        fd = s
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    deinit { close(fd) }

    /// Every later read waits at most `seconds` (0: as long as it takes). Setting the
    /// value already set makes no system call: a worker that waits with the same
    /// timeout for each task pays nothing per task for it.
    func setReadTimeout(_ seconds: Double) {
        guard seconds != readTimeout else { return }
        readTimeout = seconds
        var tv = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - Double(Int(seconds))) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    func write(_ bytes: [UInt8]) throws {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { throw Failure(description: "send failed") }
            off += n
        }
    }

    func write(_ text: String) throws { try write(Array(text.utf8)) }

    private func fill() throws {
        if start == end { start = 0; end = 0 }
        if end == buffer.count {
            if start > 0 {
                buffer.replaceSubrange(0..<(end - start), with: buffer[start..<end])
                end -= start
                start = 0
            } else {
                buffer.append(contentsOf: [UInt8](repeating: 0, count: buffer.count))
            }
        }
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + end, $0.count - end, 0) }
        if n < 0 && errno == EINTR { return }
        if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { throw Failure(description: "timeout") }
        if n <= 0 { throw Failure(description: "connection closed") }
        end += n
    }

    /// A line without its `\r\n`.
    func readLine() throws -> String {
        while true {
            if let i = buffer[start..<end].firstIndex(of: 10) {
                var lineEnd = i
                if lineEnd > start && buffer[lineEnd - 1] == 13 { lineEnd -= 1 }
                let s = String(decoding: buffer[start..<lineEnd], as: UTF8.self)
                start = i + 1
                return s
            }
            try fill()
        }
    }

    /// Whether bytes already read from the socket wait in the buffer (poll(2) does not
    /// see them).
    var hasBufferedBytes: Bool { end > start }

    /// Exactly `n` bytes.
    func read(_ n: Int) throws -> [UInt8] {
        while end - start < n { try fill() }
        defer { start += n }
        return Array(buffer[start..<start + n])
    }
}
