import Foundation
import NIOCore
import TortoiseClient
import TortoiseProtocol
import TortoiseTestSupport

/// A real `tortoised` process on 127.0.0.1 with its own data directory.
final class BrokerProcess: @unchecked Sendable {
    static var buildDirectory: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    }

    static func binary(_ name: String) -> String { buildDirectory.appendingPathComponent(name).path }

    /// This test process's folder under `tortoise-e2e` in the system's temporary folder.
    static let base = testProcessDirectory("tortoise-e2e")

    static func freshDirectory(_ name: String = #function) -> String {
        TortoiseTestSupport.freshDirectory(in: base, for: name)
    }

    let directory: String
    let arguments: [String]
    let environment: [String: String]
    /// The running (or last) tortoised; it is killed when this object goes away.
    private(set) var process: ChildProcess!
    private(set) var port = 0
    private(set) var stderrPath: String

    /// Starts a broker and waits for its listening line.
    init(directory: String? = nil, arguments: [String] = [], environment: [String: String] = [:], name: String = #function) throws {
        self.directory = directory ?? Self.freshDirectory(name)
        self.arguments = arguments
        self.environment = environment
        self.stderrPath = self.directory + ".stderr"
        try start()
    }

    /// Starts the process (again) on the same directory and port choice.
    func start(port fixedPort: Int? = nil) throws {
        var env = ChildProcess.environment(["TORTOISE_TOKEN": nil])
        for (k, v) in environment { env[k] = v }
        // Every start of this broker appends to one file, so a crash before a restart
        // stays readable.
        // Async tests resume on Swift's cooperative pool, as wide as the machine has cores
        // (2 here), and the blocking tests of other suites can hold it for seconds: a
        // test's AUTH must not run into the 10 s default for connections that never
        // authenticate (a test of that limit sets its own).
        let authTimeout = arguments.contains("--auth-timeout") ? [] : ["--auth-timeout", "120"]
        let p = try ChildProcess(Self.binary("tortoised"), ["--data", directory, "--port", String(fixedPort ?? 0)] + authTimeout + arguments,
                                 environment: env, stdout: .pipe, stderr: .file(stderrPath, append: true))
        process = p
        let line = try Self.readLine(p.stdoutPipe, timeout: 30)
        guard let line, line.hasPrefix("tortoised listening on 127.0.0.1:"), let port = Int(line.split(separator: ":").last!) else {
            p.signal(SIGKILL)
            p.wait()
            throw TestFailure("tortoised did not print its listening line; got \(line ?? "nothing"); stderr: \(stderr)")
        }
        self.port = port
    }

    var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    static func readLine(_ fd: Int32, timeout: Double) throws -> String? {
        var bytes: [UInt8] = []
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 100) > 0 else { continue }
            var b: UInt8 = 0
            let n = read(fd, &b, 1)
            if n <= 0 { return bytes.isEmpty ? nil : String(decoding: bytes, as: UTF8.self) }
            if b == 10 { return String(decoding: bytes, as: UTF8.self) }
            bytes.append(b)
        }
        return nil
    }

    /// SIGKILL, and wait for it to be gone.
    func kill9() {
        process.signal(SIGKILL)
        process.wait()
    }

    /// SIGTERM; returns the exit status.
    @discardableResult
    func terminate() -> Int32 {
        process.signal(SIGTERM)
        process.wait()
        return process.terminationStatus
    }

    /// Restarts after a kill, on the same directory (and, if asked, the same port).
    func restart(samePort: Bool = false) throws {
        if process.isRunning { kill9() }
        let previous = port
        var lastError: Error?
        for _ in 0..<20 {
            do {
                try start(port: samePort ? previous : nil)
                return
            } catch {
                lastError = error
                Thread.sleep(forTimeInterval: 0.2)
            }
        }
        throw lastError!
    }

    var clientConfiguration: TortoiseClientConfiguration {
        TortoiseClientConfiguration(host: "127.0.0.1", port: port, token: environment["TORTOISE_TOKEN"], environment: [:])
    }

    func client(receiveBuffer: Int32? = nil) throws -> RawClient { try RawClient(port: port, receiveBuffer: receiveBuffer) }

}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// A blocking raw-protocol client with time limits, for tests.
final class RawClient: @unchecked Sendable {
    /// The socket; -1 once ``disconnect()`` closed it.
    private(set) var fd: Int32
    private var buffer = ByteBuffer()
    private var parser = ServerFrameParser()
    private(set) var closedByServer = false
    /// Why the last read ended the connection: 0 for an orderly close, else errno.
    private(set) var closeErrno: Int32 = 0

    /// Connects; `receiveBuffer` (bytes) keeps what the kernel takes in for the client
    /// small, so that a client that does not read soon backs the broker up.
    init(port: Int, receiveBuffer: Int32? = nil) throws {
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if var size = receiveBuffer {
            setsockopt(s, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        // Only a connected socket becomes `fd`: a throw after `fd` is set would run
        // deinit, whose close would then close a descriptor someone else has by then.
        if rc != 0 { close(s); throw TestFailure("cannot connect to 127.0.0.1:\(port)") }
        fd = s
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Closes the connection (once: a second close could hit a descriptor another test
    /// has opened since).
    func disconnect() {
        if fd >= 0 { close(fd) }
        fd = -1
    }

    deinit { disconnect() }

    func send(_ text: String) {
        if ProcessInfo.processInfo.environment["RAW_DEBUG"] != nil { print("SEND", text.debugDescription) }
        send(Array(text.utf8))
    }

    func send(_ bytes: [UInt8]) {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            off += n
        }
    }

    /// Sends what the socket takes without waiting; returns how many bytes went.
    @discardableResult
    func sendWithoutWaiting(_ bytes: [UInt8]) -> Int {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
            if n <= 0 { break }
            off += n
        }
        return off
    }

    /// Sends a command and returns the next frame.
    func call(_ text: String) throws -> ServerFrame {
        send(text.utf8.last == 10 ? text : text + "\r\n")
        return try frame()
    }

    private var stashedReplies: [ServerFrame] = []
    private var stashedMessages: [ServerFrame] = []

    /// The next reply (not MSG), waiting up to `timeout` seconds. MSG pushes that come
    /// first are kept for ``message(timeout:)``.
    func frame(timeout: Double = 10) throws -> ServerFrame {
        if !stashedReplies.isEmpty { return stashedReplies.removeFirst() }
        while true {
            let f = try rawFrame(timeout: timeout)
            if case .message = f { stashedMessages.append(f) } else { return f }
        }
    }

    /// The next frame of any kind, in arrival order.
    func rawFrame(timeout: Double = 10) throws -> ServerFrame {
        guard let f = try nextFrame(timeout: timeout) else {
            throw TestFailure(closedByServer
                ? "the server closed the connection" + (closeErrno == 0 ? "" : " (\(String(cString: strerror(closeErrno))))")
                : "no frame within \(timeout)s")
        }
        return f
    }

    /// Whether a MSG arrives within `timeout` seconds (it is kept for ``message(timeout:)``).
    func hasMessage(within timeout: Double) throws -> Bool {
        if !stashedMessages.isEmpty { return true }
        let deadline = Date().addingTimeInterval(timeout)
        while deadline.timeIntervalSinceNow > 0 {
            guard let f = try nextFrame(timeout: deadline.timeIntervalSinceNow) else { return false }
            if case .message = f { stashedMessages.append(f); return true }
            stashedReplies.append(f)
        }
        return false
    }

    /// The next frame, or nil if none comes within `timeout` (or the server closed).
    func nextFrame(timeout: Double) throws -> ServerFrame? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if let f = try parser.next(from: &buffer) { return f }
            if closedByServer { return nil }
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { return nil }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, Int32(min(left, 1) * 1000) + 1) > 0 else { continue }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n = recv(fd, &chunk, chunk.count, 0)
            if n < 0 && (errno == EINTR || errno == EAGAIN) { continue } // e.g. SIGCHLD from a killed broker
            if n <= 0 { closedByServer = true; closeErrno = n < 0 ? errno : 0; continue }
            buffer.writeBytes(chunk[0..<n])
        }
    }

    /// Whether the server closed the connection within `timeout`.
    func waitForClose(timeout: Double = 5) throws -> Bool {
        while let f = try nextFrame(timeout: timeout) { stashedReplies.append(f) }
        return closedByServer
    }

    func put(_ queue: String, _ payload: String) throws -> UInt64 {
        send("PUT \(queue) \(payload.utf8.count)\r\n\(payload)\r\n")
        guard case .ok(let w) = try frame(), let id = w.first.flatMap(UInt64.init) else { throw TestFailure("PUT failed") }
        return id
    }

    /// The next MSG: id, queue, delivery and payload text.
    func message(timeout: Double = 10) throws -> (id: UInt64, queue: String, delivery: Int, payload: String) {
        guard try hasMessage(within: timeout) else { throw TestFailure("no MSG within \(timeout)s") }
        let f = stashedMessages.removeFirst()
        guard case let .message(id, queue, delivery, payload) = f else { throw TestFailure("expected MSG, got \(f)") }
        return (id, queue, delivery, String(decoding: payload.readableBytesView, as: UTF8.self))
    }

    func json<T: Decodable>(_ type: T.Type, _ command: String) throws -> T {
        let f = try call(command)
        guard case .json(let body) = f else { throw TestFailure("expected JSON, got \(f)") }
        return try ReplyJSON.decode(type, from: body)
    }

    func stats() throws -> StatsReply { try json(StatsReply.self, "STATS") }

    func failed(_ query: String = "", limit: Int = 100) throws -> FailedReply {
        try json(FailedReply.self, "FAILED \(limit) \(query.utf8.count)\r\n\(query)\r\n")
    }
}

extension ServerFrame {
    var errorCode: String? { if case .error(let c, _) = self { return c } else { return nil } }
    var isOK: Bool { if case .ok = self { return true } else { return false } }
}
