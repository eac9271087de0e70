import NIOCore
import TortoiseStorage

/// Which worker gets which task: per queue, the tasks the broker may hand out and the
/// idle workers, longest idle first. Confined to the broker's event loop.
struct Dispatcher {
    /// One queue's state. A reference: each worker keeps the states of its queues at
    /// hand, so that becoming idle looks nothing up by name, and a change never copies
    /// the idle line.
    final class QueueState {
        let name: String
        /// Ready tasks known to be durable, which the broker may take.
        var available = 0
        /// Workers in the order they became idle; stale entries are skipped.
        private var idle = CircularBuffer<(worker: ConnectionHandler, epoch: UInt64)>()
        /// Connected workers subscribed.
        var workers = 0
        /// Tasks on their way back to the front of this queue (a lost worker's, or one
        /// returned by `REQUEUE` without delay) whose change is not committed yet. Until
        /// they are there the queue hands nothing out: what stands behind them must not
        /// go first.
        var returning = 0

        init(name: String) {
            self.name = name
        }

        /// Records that `worker` is idle from now.
        func markIdle(_ worker: ConnectionHandler, epoch: UInt64) {
            // Last in line already (no one became idle here since): it stays there, as it
            // is the latest to become idle again. A worker alone on a queue never grows
            // the line.
            if let last = idle.indices.last, idle[last].worker === worker {
                idle[last].epoch = epoch
                return
            }
            idle.append((worker, epoch))
            if idle.count > 2 * workers + 8 {
                // Compact: keep only the entries still valid.
                idle = CircularBuffer(idle.filter { $0.worker.isIdle(epoch: $0.epoch) })
            }
        }

        /// Whether a worker may be waiting here (an entry of the idle line may be stale:
        /// true then too).
        var mayHaveIdleWorker: Bool { !idle.isEmpty }

        /// The longest-idle worker when there is an available task: both are claimed
        /// (the caller takes the task for the worker).
        func claim() -> ConnectionHandler? {
            guard available > 0, returning == 0 else { return nil }
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

    private mutating func state(_ queue: String) -> QueueState {
        if let q = queues[queue] { return q }
        let q = QueueState(name: queue)
        queues[queue] = q
        return q
    }

    mutating func addAvailable(_ queue: String, _ n: Int) {
        state(queue).available += n
    }

    func resetAvailable(_ queue: String) {
        queues[queue]?.available = 0
    }

    /// Counts a worker of `queue`; the state returned stays the queue's while it has one.
    mutating func subscribe(_ queue: String) -> QueueState {
        let q = state(queue)
        q.workers += 1
        return q
    }

    mutating func unsubscribe(_ queue: QueueState) {
        queue.workers -= 1
        forgetIfUnused(queue)
    }

    private mutating func forgetIfUnused(_ queue: QueueState) {
        if queue.available == 0 && queue.workers <= 0 && queue.returning == 0 { queues[queue.name] = nil }
    }

    /// A task of `queue` is on its way back to the front: the queue hands nothing out
    /// until `endReturn`.
    mutating func beginReturn(_ queue: String) {
        state(queue).returning += 1
    }

    mutating func endReturn(_ queue: String) {
        guard let q = queues[queue] else { return }
        q.returning -= 1
        forgetIfUnused(q)
    }

    /// Whether a worker of `queue` may be idle, waiting for a task.
    func mayHaveIdleWorker(_ queue: String) -> Bool {
        queues[queue]?.mayHaveIdleWorker ?? false
    }

    /// The longest-idle worker of `queue` when it has an available task: both are
    /// claimed (the caller takes the task for the worker).
    func claim(_ queue: String) -> ConnectionHandler? {
        queues[queue]?.claim()
    }
}
