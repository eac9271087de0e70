/// The tables of a data directory and how their keys are built (see docs/storage.md).
struct StoreTables: Equatable {
    /// `format`, `next_id`, `next_seq`, `pruned` → big-endian numbers.
    let meta: LMDBDatabase
    /// id → ``TaskRecord``: every task that is ready, in flight or delayed.
    let tasks: LMDBDatabase
    /// queue ␀ seq → id: the ready tasks of each queue in delivery order.
    let ready: LMDBDatabase
    /// id → empty: the tasks held by workers.
    let inflight: LMDBDatabase
    /// readyAt id → empty: tasks waiting out a `REQUEUE` delay, soonest first.
    let delayed: LMDBDatabase
    /// queue → ``QueueCounts``.
    let queues: LMDBDatabase
    /// id → ``FailedTask``: the failed store.
    let failed: LMDBDatabase
    /// posting → empty: every failure, newest first.
    let byTime: LMDBDatabase
    /// word → postings (sorted duplicates).
    let byWord: LMDBDatabase
    /// queue → postings (sorted duplicates).
    let byQueue: LMDBDatabase
    /// group → postings (sorted duplicates).
    let byGroup: LMDBDatabase
    /// group queue → count: which queues each error group has failures in.
    let groupQueues: LMDBDatabase

    init(env: LMDBEnvironment) throws(StorageError) {
        meta = try env.openDatabase("meta")
        tasks = try env.openDatabase("tasks")
        ready = try env.openDatabase("ready")
        inflight = try env.openDatabase("inflight")
        delayed = try env.openDatabase("delayed")
        queues = try env.openDatabase("queues")
        failed = try env.openDatabase("failed")
        byTime = try env.openDatabase("failed_by_time")
        byWord = try env.openDatabase("failed_by_word", duplicateSort: true)
        byQueue = try env.openDatabase("failed_by_queue", duplicateSort: true)
        byGroup = try env.openDatabase("failed_by_group", duplicateSort: true)
        groupQueues = try env.openDatabase("failed_group_queues")
    }

    static let tableCount: UInt32 = 12

    static func taskKey(_ id: TaskID) -> [UInt8] { id.bigEndianBytes }

    static func queuePrefix(_ queue: String) -> [UInt8] { Array(queue.utf8) + [0] }

    static func readyKey(_ queue: String, _ seq: UInt64) -> [UInt8] {
        var w = ByteWriter(capacity: queue.utf8.count + 9)
        w.raw(queue.utf8); w.u8(0); w.u64(seq)
        return w.bytes
    }

    static func delayedKey(_ readyAt: Millis, _ id: TaskID) -> [UInt8] {
        var w = ByteWriter(capacity: 16)
        w.i64(readyAt); w.u64(id)
        return w.bytes
    }

    /// A failure's place in the newest-first orders: inverted time, then inverted id.
    static func posting(_ failedAt: Millis, _ id: TaskID) -> [UInt8] {
        var w = ByteWriter(capacity: 16)
        w.u64(~(UInt64(bitPattern: failedAt) ^ (1 << 63)))
        w.u64(~id)
        return w.bytes
    }

    static func decodePosting(_ b: [UInt8]) -> (failedAt: Millis, id: TaskID) {
        let t = ~UInt64(bigEndianBytes: b[0..<8])
        let id = ~UInt64(bigEndianBytes: b[8..<16])
        return (Int64(bitPattern: t ^ (1 << 63)), id)
    }

    static func groupQueueKey(_ group: UInt64, _ queue: String) -> [UInt8] {
        var w = ByteWriter(capacity: 8 + queue.utf8.count)
        w.u64(group); w.raw(queue.utf8)
        return w.bytes
    }
}
