import NIOCore
import TortoiseProtocol

/// A connection to a TortoiseMQ broker for producers and operators.
///
/// Every call may run concurrently with the others: they share one connection and are
/// pipelined, so a hundred concurrent `put`s cost about one round trip and one disk
/// flush, not a hundred. When the connection drops, the next call reconnects; a call
/// that was waiting when it dropped fails with ``TortoiseClientError/Code/connectionLost``
/// (its command may or may not have taken effect, so a `put` may be retried: delivery
/// is at least once).
///
/// ```swift
/// let client = try await TortoiseClient.connect(TortoiseClientConfiguration())
/// let id = try await client.put("emails", "to: bob@example.com")
/// let failures = try await client.failed("smtp since:1h", limit: 20)
/// ```
public actor TortoiseClient {
    /// Where the client connects.
    public nonisolated let configuration: TortoiseClientConfiguration
    private var connection: Connection?
    private var connecting: Task<Connection, any Error>?
    private var isClosed = false

    private init(configuration: TortoiseClientConfiguration) {
        self.configuration = configuration
    }

    /// Connects (and authenticates) now, so that a wrong address or token shows at once.
    public static func connect(_ configuration: TortoiseClientConfiguration = TortoiseClientConfiguration()) async throws(TortoiseClientError) -> TortoiseClient {
        let client = TortoiseClient(configuration: configuration)
        _ = try await client.liveConnection()
        return client
    }

    /// Connects to a URL like `tortoise://:token@host:port`.
    public static func connect(url: String) async throws(TortoiseClientError) -> TortoiseClient {
        try await connect(try TortoiseClientConfiguration(url: url))
    }

    private func liveConnection() async throws(TortoiseClientError) -> Connection {
        if isClosed { throw TortoiseClientError(.closed, "the client was closed") }
        if let c = connection, c.isActive { return c }
        if let pending = connecting {
            do { return try await pending.value } catch { throw Self.wrap(error) }
        }
        let config = configuration
        let task = Task { () throws -> Connection in try await Connection.open(config) }
        connecting = task
        defer { connecting = nil }
        do {
            let c = try await task.value
            connection = c
            return c
        } catch {
            throw Self.wrap(error)
        }
    }

    private static func wrap(_ error: any Error) -> TortoiseClientError {
        (error as? TortoiseClientError) ?? TortoiseClientError(.connectionFailed, "\(error)")
    }

    private func send(_ command: Command) async throws(TortoiseClientError) -> [String] {
        try await liveConnection().ok(command)
    }

    // MARK: Producer

    /// Stores a task at the back of `queue`; returns its id once the broker has it on disk.
    public func put(_ queue: String, _ payload: some Sequence<UInt8>) async throws(TortoiseClientError) -> UInt64 {
        guard Wire.isValidName(queue) else {
            throw TortoiseClientError(.badArgument, "queue name '\(queue)' is not 1 to \(Wire.maxNameLength) of A-Z a-z 0-9 . _ - :")
        }
        let words = try await send(.put(queue: queue, payload: ByteBuffer(bytes: Array(payload))))
        guard let id = words.first.flatMap(UInt64.init) else {
            throw TortoiseClientError(.protocolViolation, "PUT was answered without an id")
        }
        return id
    }

    /// Stores a text task (UTF-8) at the back of `queue`.
    public func put(_ queue: String, _ text: String) async throws(TortoiseClientError) -> UInt64 {
        try await put(queue, Array(text.utf8))
    }

    /// Checks that the broker answers.
    public func ping() async throws(TortoiseClientError) {
        _ = try await send(.ping)
    }

    // MARK: Operator

    /// Counts per queue, and broker-wide figures.
    public func stats() async throws(TortoiseClientError) -> StatsReply {
        try await liveConnection().json(.stats, as: StatsReply.self)
    }

    /// The newest `limit` failed tasks matching `query` (see the query language), and how
    /// many match in all.
    public func failed(_ query: String = "", limit: Int = 100) async throws(TortoiseClientError) -> FailedReply {
        try await liveConnection().json(.failed(limit: limit, query: query), as: FailedReply.self)
    }

    /// The failures matching `query` grouped by error fingerprint, most frequent first.
    public func errors(_ query: String = "", limit: Int = 100) async throws(TortoiseClientError) -> ErrorsReply {
        try await liveConnection().json(.errors(limit: limit, query: query), as: ErrorsReply.self)
    }

    /// Puts every failed task matching `query` back at the back of its queue, in one
    /// atomic step; returns how many. An empty query replays every failure.
    public func replay(_ query: String) async throws(TortoiseClientError) -> Int {
        try await count(.replay(query: query))
    }

    /// Removes every failed task matching `query` for good, in one atomic step; returns how many.
    public func delete(_ query: String) async throws(TortoiseClientError) -> Int {
        try await count(.delete(query: query))
    }

    private func count(_ command: Command) async throws(TortoiseClientError) -> Int {
        let words = try await send(command)
        guard let n = words.first.flatMap(Int.init) else {
            throw TortoiseClientError(.protocolViolation, "\(command.verb) was answered without a count")
        }
        return n
    }

    /// Closes the connection. Later calls fail with ``TortoiseClientError/Code/closed``.
    public func close() {
        isClosed = true
        connection?.close()
        connection = nil
    }
}
