import NIOCore
import TortoiseStorage

/// Which worker gets which task: per queue, the tasks the broker may hand out and the
/// idle workers, longest idle first. Confined to the broker's event loop.
struct Dispatcher {
    struct QueueState {
        /// Ready tasks known to be durable, which the broker may take.
        var available = 0
        /// Workers in the order they became idle; stale entries are skipped.
        var idle = CircularBuffer<(worker: ConnectionHandler, epoch: UInt64)>()
        /// Connected workers subscribed.
        var workers = 0

        mutating func markIdle(_ worker: ConnectionHandler, epoch: UInt64) {
            idle.append((worker, epoch))
            if idle.count > 2 * workers + 8 {
                // Compact: keep only the entries still valid.
                idle = CircularBuffer(idle.filter { $0.worker.isIdle(epoch: $0.epoch) })
            }
        }

        mutating func claim() -> ConnectionHandler? {
            guard available > 0 else { return nil }
            while let entry = idle.popFirst() {
                if entry.worker.isIdle(epoch: entry.epoch) {
                    available -= 1
                    return entry.worker
                }
            }
            return nil
        }
    }

    private(set) var queues: [String: QueueState] = [:]

    subscript(queue: String) -> QueueState {
        get { queues[queue] ?? QueueState() }
        set { queues[queue] = newValue }
    }

    mutating func addAvailable(_ queue: String, _ n: Int) {
        queues[queue, default: QueueState()].available += n
    }

    mutating func resetAvailable(_ queue: String) {
        queues[queue]?.available = 0
    }

    mutating func subscribe(_ queue: String) {
        queues[queue, default: QueueState()].workers += 1
    }

    mutating func unsubscribe(_ queue: String) {
        queues[queue, default: QueueState()].workers -= 1
        dropIfEmpty(queue)
    }

    /// Records that `worker` is idle for `queue` from now.
    mutating func markIdle(_ worker: ConnectionHandler, epoch: UInt64, in queue: String) {
        // Changed in place: a copy of the state would share the idle line's storage, and
        // the append would then copy the whole line (every worker of the queue).
        queues[queue, default: QueueState()].markIdle(worker, epoch: epoch)
    }

    /// The longest-idle worker of `queue` when it has an available task: both are
    /// claimed (the caller takes the task for the worker).
    mutating func claim(_ queue: String) -> ConnectionHandler? {
        queues[queue]?.claim() ?? nil
    }

    private mutating func dropIfEmpty(_ queue: String) {
        if let q = queues[queue], q.available == 0, q.workers <= 0 { queues[queue] = nil }
    }
}
