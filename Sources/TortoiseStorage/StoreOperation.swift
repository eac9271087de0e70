/// A change to the task store. Each is applied atomically, in the order submitted.
public enum StoreOperation: Sendable, Equatable {
    /// Stores a task at the back of `queue`.
    case put(queue: String, payload: [UInt8])
    /// Takes the front ready task of `queue` for delivery (nil when there is none).
    case take(queue: String)
    /// Marks a ready task, chosen with ``TaskStore/peekReady(_:skipping:)`` and already
    /// handed to a worker, as in flight (deliveries + 1).
    case claim(TaskID)
    /// The task is done: remove it.
    case ack(TaskID)
    /// The task failed: move it to the failed store with `error`.
    case nack(TaskID, error: String)
    /// The worker returns the task: front of its queue, or delayed until `readyAt`.
    case requeue(TaskID, readyAt: Millis?)
    /// The broker returns a task a worker lost (disconnect, ack timeout): front of its queue.
    case release(TaskID)
    /// Delayed tasks whose time has come become ready again, at the front.
    case promoteDue
    /// Matching failed tasks go back to the back of their queues, keeping their ids.
    case replay(FailedQuery)
    /// Matching failed tasks are removed for good.
    case delete(FailedQuery)
    /// Failures older than the time are removed, at most `limit` of them (retention).
    case prune(olderThan: Millis, limit: Int)

    /// Whether the caller must hear back only after the change is on disk.
    public var isDurable: Bool {
        switch self {
        case .take, .claim, .release, .promoteDue: return false
        default: return true
        }
    }

    /// Whether the change adds data (refused at once while the store is full).
    var adds: Bool {
        switch self {
        case .put, .replay: return true
        default: return false
        }
    }
}

/// Where a returned task went.
public enum ReturnedTo: Sendable, Equatable {
    /// Ready at the front of the queue.
    case ready(queue: String)
    /// Waiting out a delay.
    case delayed(queue: String)
    /// Its delivery limit was reached: it is in the failed store now.
    case failed(queue: String)
}

/// What an operation did.
public enum StoreOutcome: Sendable, Equatable {
    /// The new task's id.
    case put(TaskID)
    /// The task taken, or nil when the queue had none ready.
    case taken(DeliveredTask?)
    /// The task is in flight.
    case claimed
    /// The task was removed.
    case acked
    /// The task is in the failed store, in `queue`.
    case failed(queue: String)
    /// Where a returned task went.
    case returned(ReturnedTo)
    /// How many delayed tasks became ready, per queue.
    case promoted([String: Int])
    /// How many failed tasks were replayed, per queue.
    case replayed([String: Int])
    /// How many failed tasks were deleted.
    case deleted(Int)
    /// How many failures retention removed.
    case pruned(Int)
}
