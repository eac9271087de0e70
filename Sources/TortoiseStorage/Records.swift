/// A task's id: unique in the broker, never reused.
public typealias TaskID = UInt64

/// Milliseconds since 1970, the store's clock unit.
public typealias Millis = Int64

/// Where a live (not failed) task is.
enum TaskState: UInt8 {
    case ready = 1
    case inflight = 2
    case delayed = 3
}

/// A live task as stored in the `tasks` table.
struct TaskRecord {
    var state: TaskState
    var deliveries: UInt32
    var replays: UInt32
    /// Place in its queue; smaller is nearer the front. A returned task keeps it.
    var seq: UInt64
    /// When a delayed task becomes ready.
    var readyAt: Millis
    var queue: String
    var payload: [UInt8]

    func encoded() -> [UInt8] {
        var w = ByteWriter(capacity: 40 + queue.utf8.count + payload.count)
        w.u8(state.rawValue)
        w.u32(deliveries)
        w.u32(replays)
        w.u64(seq)
        w.i64(readyAt)
        w.string(queue)
        w.raw(payload)
        return w.bytes
    }

    init(state: TaskState, deliveries: UInt32, replays: UInt32, seq: UInt64, readyAt: Millis, queue: String, payload: [UInt8]) {
        self.state = state
        self.deliveries = deliveries
        self.replays = replays
        self.seq = seq
        self.readyAt = readyAt
        self.queue = queue
        self.payload = payload
    }

    init(decoding bytes: [UInt8]) throws(StorageError) {
        var r = ByteReader(bytes)
        guard let s = TaskState(rawValue: try r.u8()) else { throw StorageError(.corrupt, "a task record has an unknown state") }
        state = s
        deliveries = try r.u32()
        replays = try r.u32()
        seq = try r.u64()
        readyAt = try r.i64()
        queue = try r.string()
        payload = r.rest()
    }
}

extension TaskRecord {
    /// What a delivery needs of a stored record, read in place without decoding the rest:
    /// the deliveries so far and a copy of the payload.
    static func deliveryFields(_ raw: UnsafeRawBufferPointer) throws(StorageError) -> (deliveries: UInt32, payload: [UInt8]) {
        // state (1), deliveries (4), replays (4), seq (8), ready-at (8), queue length (4),
        // queue, payload: see `encoded()`.
        func u32(at i: Int) -> UInt32 {
            UInt32(raw[i]) << 24 | UInt32(raw[i + 1]) << 16 | UInt32(raw[i + 2]) << 8 | UInt32(raw[i + 3])
        }
        guard raw.count >= 29 else { throw StorageError(.corrupt, "a stored record is shorter than its format says") }
        let payloadStart = 29 + Int(u32(at: 25))
        guard raw.count >= payloadStart else { throw StorageError(.corrupt, "a stored record is shorter than its format says") }
        return (u32(at: 1), Array(raw[payloadStart...]))
    }
}

/// A task in the failed store, as operators see it.
public struct FailedTask: Sendable, Equatable {
    /// The task's id (kept from when it was put).
    public var id: TaskID
    /// The queue it was put into.
    public var queue: String
    /// The error text the worker gave (or the broker's, e.g. the delivery limit).
    public var error: String
    /// The error's fingerprint group (see ``ErrorFingerprint``).
    public var group: UInt64
    /// How many times it was delivered before it failed.
    public var deliveries: Int
    /// How many times it was replayed before this failure.
    public var replays: Int
    /// When it failed.
    public var failedAt: Millis
    /// The task's bytes.
    public var payload: [UInt8]

    /// Makes a failure record.
    public init(id: TaskID, queue: String, error: String, group: UInt64, deliveries: Int, replays: Int, failedAt: Millis, payload: [UInt8]) {
        self.id = id
        self.queue = queue
        self.error = error
        self.group = group
        self.deliveries = deliveries
        self.replays = replays
        self.failedAt = failedAt
        self.payload = payload
    }

    func encoded() -> [UInt8] {
        var w = ByteWriter(capacity: 40 + queue.utf8.count + error.utf8.count + payload.count)
        w.u32(UInt32(clamping: deliveries))
        w.u32(UInt32(clamping: replays))
        w.i64(failedAt)
        w.u64(group)
        w.string(queue)
        w.string(error)
        w.raw(payload)
        return w.bytes
    }

    init(id: TaskID, decoding bytes: [UInt8]) throws(StorageError) {
        var r = ByteReader(bytes)
        self.id = id
        deliveries = Int(try r.u32())
        replays = Int(try r.u32())
        failedAt = try r.i64()
        group = try r.u64()
        queue = try r.string()
        error = try r.string()
        payload = r.rest()
    }
}

extension FailedTask {
    /// What counting failures by group needs of a stored failure, read in place without
    /// copying its error text and payload: its group and queue.
    static func groupAndQueue(_ raw: UnsafeRawBufferPointer) throws(StorageError) -> (group: UInt64, queue: String) {
        // deliveries (4), replays (4), failed-at (8), group (8), queue length (4), queue,
        // error, payload: see `encoded()`.
        guard raw.count >= 28 else { throw StorageError(.corrupt, "a stored failure is shorter than its format says") }
        let group = UInt64(bigEndianBytes: raw[16..<24])
        let length = Int(UInt64(bigEndianBytes: raw[24..<28]))
        guard raw.count >= 28 + length else { throw StorageError(.corrupt, "a stored failure is shorter than its format says") }
        return (group, String(decoding: raw[28..<(28 + length)], as: UTF8.self))
    }
}

/// A task handed to a worker.
public struct DeliveredTask: Sendable, Equatable {
    /// The task's id.
    public var id: TaskID
    /// Its queue.
    public var queue: String
    /// Its bytes.
    public var payload: [UInt8]
    /// 1 on the first delivery, 2 on the second, ...
    public var delivery: Int
}

/// How many tasks a queue holds in each state.
public struct QueueCounts: Sendable, Equatable {
    /// Waiting to be delivered.
    public var ready = 0
    /// Delivered and not yet acknowledged.
    public var inflight = 0
    /// Waiting out a `REQUEUE` delay.
    public var delayed = 0
    /// In the failed store.
    public var failed = 0

    /// Makes counts.
    public init(ready: Int = 0, inflight: Int = 0, delayed: Int = 0, failed: Int = 0) {
        self.ready = ready
        self.inflight = inflight
        self.delayed = delayed
        self.failed = failed
    }

    var isEmpty: Bool { ready == 0 && inflight == 0 && delayed == 0 && failed == 0 }

    /// The record. A count below zero (a store whose counts disagree with its tables) is
    /// written as zero: `STATS` is then off, where a trap would stop the broker. Debug
    /// builds (the tests) still stop on it.
    func encoded() -> [UInt8] {
        assert(ready >= 0 && inflight >= 0 && delayed >= 0 && failed >= 0, "a queue count went below zero: \(self)")
        var w = ByteWriter(capacity: 32)
        w.u64(UInt64(clamping: ready)); w.u64(UInt64(clamping: inflight))
        w.u64(UInt64(clamping: delayed)); w.u64(UInt64(clamping: failed))
        return w.bytes
    }

    init(decoding bytes: [UInt8]) throws(StorageError) {
        var r = ByteReader(bytes)
        ready = try r.count(); inflight = try r.count(); delayed = try r.count(); failed = try r.count()
    }
}
