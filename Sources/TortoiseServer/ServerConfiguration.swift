import TortoiseProtocol

/// Everything `tortoised` can be told.
public struct ServerConfiguration: Sendable {
    /// The data directory.
    public var dataDirectory = "./tortoise-data"
    /// The address to listen on.
    public var host = Wire.defaultHost
    /// The port (0: any free port; the listening line says which).
    public var port = Wire.defaultPort
    /// When set, clients must `AUTH` with it.
    public var token: String?
    /// The largest body accepted.
    public var maxBody = Wire.defaultMaxBody
    /// Deliveries after which a returned task goes to the failed store (0: no limit).
    public var maxDeliveries = 10
    /// Seconds a worker may hold a task without ACK, NACK, REQUEUE or TOUCH (0: off).
    public var ackTimeoutSeconds = 1800
    /// Failures older than this many milliseconds are pruned (nil: kept forever).
    public var failedRetentionMillis: Int64?
    /// The most the store may grow to, in bytes.
    public var maxStorageBytes = 256 << 30
    /// The most client connections at once; more are refused.
    public var maxConnections = 10_000
    /// Seconds a connection may stay without a successful `AUTH` when a token is set.
    public var authTimeoutSeconds = 10
    /// Queues one connection may work on (`SUB`); a worker that becomes idle is lined
    /// up in each, so this bounds what one connection can cost every other.
    public var maxSubscriptions = 1024
    /// A `JSON` reply body bigger than this is written to an unnamed file in the data
    /// directory as it is encoded, and sent from there: a `FAILED` over many large
    /// payloads does not have to fit in memory.
    public var replyMemoryLimit = 1 << 20
    /// Replies a connection may have outstanding before the broker stops reading from it.
    public var maxPendingReplies = 256
    /// At open, LMDB's file is compacted when it is at least this big and at most half of
    /// it is live (nil: never; docs/storage.md, "Compaction").
    public var compactFilesFrom: Int? = 16 << 20
    /// While running, how often to look whether the file is worth compacting (nil: only at start).
    public var compactCheckSeconds: Double? = 10
    /// Called once, on a storage thread, when the store halts after a failed flush to
    /// disk (it then refuses every change; reads go on). `tortoised` stops then, so that
    /// a restart rebuilds the state from what reached the disk.
    public var storeHalted: (@Sendable (String) -> Void)?

    /// The defaults of the command-line contract.
    public init() {}
}
