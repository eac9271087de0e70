/// The JSON documents the server sends, shared by the server and the client library.

/// `STATS`: counts per queue and broker-wide figures.
public struct StatsReply: Codable, Sendable, Equatable {
    /// Each queue that holds tasks or has workers.
    public var queues: [String: QueueStats]
    /// Failures removed by retention since the data directory was created.
    public var pruned: Int
    /// Open client connections.
    public var connections: Int?

    /// Makes a reply.
    public init(queues: [String: QueueStats], pruned: Int, connections: Int? = nil) {
        self.queues = queues
        self.pruned = pruned
        self.connections = connections
    }
}

/// One queue in `STATS`.
public struct QueueStats: Codable, Sendable, Equatable {
    /// Waiting for a worker.
    public var ready: Int
    /// Held by workers.
    public var inflight: Int
    /// In the failed store.
    public var failed: Int
    /// Connected workers subscribed to the queue.
    public var workers: Int
    /// Waiting out a `REQUEUE` delay.
    public var delayed: Int

    /// Makes counts.
    public init(ready: Int, inflight: Int, failed: Int, workers: Int, delayed: Int) {
        self.ready = ready
        self.inflight = inflight
        self.failed = failed
        self.workers = workers
        self.delayed = delayed
    }
}

/// `FAILED`: a page of the failed store.
public struct FailedReply: Codable, Sendable, Equatable {
    /// How many failures match.
    public var total: Int
    /// The newest of them, newest first.
    public var tasks: [FailedTaskInfo]

    /// Makes a reply.
    public init(total: Int, tasks: [FailedTaskInfo]) {
        self.total = total
        self.tasks = tasks
    }
}

/// One failed task as `FAILED` shows it.
public struct FailedTaskInfo: Codable, Sendable, Equatable {
    /// The task's id.
    public var id: UInt64
    /// Its queue.
    public var queue: String
    /// The error text.
    public var error: String
    /// The fingerprint group, 16 hex digits.
    public var group: String
    /// Deliveries before it failed.
    public var deliveries: Int
    /// Replays before this failure.
    public var replays: Int
    /// When it failed, RFC 3339.
    public var failedAt: String
    /// The payload, when it is valid UTF-8.
    public var payload: String?
    /// The payload in base64, when it is not.
    public var payloadBase64: String?

    enum CodingKeys: String, CodingKey {
        case id, queue, error, group, deliveries, replays
        case failedAt = "failed_at"
        case payload
        case payloadBase64 = "payload_base64"
    }

    /// Makes an entry.
    public init(id: UInt64, queue: String, error: String, group: String, deliveries: Int, replays: Int, failedAt: String, payload: String?, payloadBase64: String?) {
        self.id = id
        self.queue = queue
        self.error = error
        self.group = group
        self.deliveries = deliveries
        self.replays = replays
        self.failedAt = failedAt
        self.payload = payload
        self.payloadBase64 = payloadBase64
    }
}

/// `ERRORS`: failures grouped by fingerprint.
public struct ErrorsReply: Codable, Sendable, Equatable {
    /// The groups, most frequent first.
    public var groups: [ErrorGroupInfo]

    /// Makes a reply.
    public init(groups: [ErrorGroupInfo]) { self.groups = groups }
}

/// One group in `ERRORS`.
public struct ErrorGroupInfo: Codable, Sendable, Equatable {
    /// The fingerprint group, 16 hex digits.
    public var group: String
    /// The newest error text of the group.
    public var example: String
    /// How many matching failures it has.
    public var count: Int
    /// Their queues.
    public var queues: [String]
    /// The oldest failure's time, RFC 3339.
    public var firstFailedAt: String
    /// The newest failure's time, RFC 3339.
    public var lastFailedAt: String

    enum CodingKeys: String, CodingKey {
        case group, example, count, queues
        case firstFailedAt = "first_failed_at"
        case lastFailedAt = "last_failed_at"
    }

    /// Makes an entry.
    public init(group: String, example: String, count: Int, queues: [String], firstFailedAt: String, lastFailedAt: String) {
        self.group = group
        self.example = example
        self.count = count
        self.queues = queues
        self.firstFailedAt = firstFailedAt
        self.lastFailedAt = lastFailedAt
    }
}
