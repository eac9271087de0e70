import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TortoiseProtocol
import TortoiseStorage

/// The broker's shared state: connections, who works on which queue, timers. Every
/// method runs on the one event loop that owns it; storage completions hop back to it.
final class Broker: @unchecked Sendable {
    let loop: EventLoop
    let store: TaskStore
    let config: ServerConfiguration
    let logger: Logger
    let threadPool: NIOThreadPool
    var dispatcher = Dispatcher()
    private(set) var connections: [ObjectIdentifier: ConnectionHandler] = [:]
    private var delayTimer: Scheduled<Void>?
    private var delayTimerAt: Millis?
    private var retentionTask: RepeatedTask?
    private(set) var shuttingDown = false

    init(loop: EventLoop, store: TaskStore, config: ServerConfiguration, logger: Logger, threadPool: NIOThreadPool) throws(StorageError) {
        self.loop = loop
        self.store = store
        self.config = config
        self.logger = logger
        self.threadPool = threadPool
        for (queue, counts) in try store.counts() where counts.ready > 0 {
            dispatcher.addAvailable(queue, counts.ready)
        }
    }

    /// Starts the timers (delayed tasks, retention). On the loop.
    func start() {
        loop.assertInEventLoop()
        scheduleDelayTimer()
        if let retention = config.failedRetentionMillis {
            let every = TimeAmount.milliseconds(max(1000, min(60_000, retention / 10)))
            retentionTask = loop.scheduleRepeatedTask(initialDelay: .milliseconds(500), delay: every) { [self] _ in
                prune(retention: retention)
            }
        }
    }

    /// Submits a change to the store; `completion` runs on the loop.
    func submit(_ op: StoreOperation, _ completion: @escaping @Sendable (Result<StoreOutcome, StorageError>) -> Void) {
        store.submit(op) { [self] result in completed { completion(result) } }
    }

    /// Submits a durable change; `committed`, if given, runs on the loop as soon as the
    /// change is visible (its flush still under way), `completion` once it is durable.
    func submit(_ op: StoreOperation, committed: (@Sendable (StoreOutcome) -> Void)?,
                _ completion: @escaping @Sendable (Result<StoreOutcome, StorageError>) -> Void) {
        var onLoop: (@Sendable (StoreOutcome) -> Void)?
        if let committed {
            onLoop = { [self] outcome in completed { committed(outcome) } }
        }
        store.submit(op, committed: onLoop) { [self] result in completed { completion(result) } }
    }

    /// Store completions waiting to run on the loop, and whether a pass is scheduled.
    private let completions = NIOLockedValueBox<(work: [@Sendable () -> Void], scheduled: Bool)>(([], false))
    /// Completions run per pass; between passes the loop polls for I/O, so that a flood of
    /// writes (whose completions never stop coming) cannot keep other clients waiting.
    private static let completionsPerPass = 256

    /// Loop-only: whether a pass of completions runs, and the connections whose replies
    /// wait for its end.
    private var inCompletionPass = false
    private var repliesDeferred: [ConnectionHandler] = []

    /// During a completion pass: notes that `c` has replies to write at the end of the
    /// pass and says true. Otherwise false: the caller writes them now.
    func deferReplies(of c: ConnectionHandler) -> Bool {
        guard inCompletionPass else { return false }
        if !c.repliesDeferred {
            c.repliesDeferred = true
            repliesDeferred.append(c)
        }
        return true
    }

    private func completed(_ work: @escaping @Sendable () -> Void) {
        let schedule = completions.withLockedValue { state -> Bool in
            state.work.append(work)
            if state.scheduled { return false }
            state.scheduled = true
            return true
        }
        if schedule { loop.execute { [self] in runCompletions() } }
    }

    private func runCompletions() {
        let batch = completions.withLockedValue { state -> [@Sendable () -> Void] in
            let n = min(Self.completionsPerPass, state.work.count)
            let batch = Array(state.work.prefix(n))
            state.work.removeFirst(n)
            if state.work.isEmpty { state.scheduled = false }
            return batch
        }
        inCompletionPass = true
        for work in batch { work() }
        inCompletionPass = false
        let deferred = repliesDeferred
        repliesDeferred = []
        for c in deferred { c.flushDeferredReplies() }
        let more = completions.withLockedValue { !$0.work.isEmpty && $0.scheduled }
        guard more else {
            passesInARow = 0
            return
        }
        if batch.count < Self.completionsPerPass && passesInARow < Self.passesInARowAtMost {
            // Completions that came during a short pass run at once, in this tick of
            // the loop: waiting for a timer here held a producer's OK back by up to
            // 200 µs whenever the writer finished a batch during a pass.
            passesInARow += 1
            loop.execute { [self] in runCompletions() }
        } else {
            // A flood: a timed task, so the loop polls for I/O before the next pass.
            passesInARow = 0
            loop.scheduleTask(in: .microseconds(200)) { [self] in runCompletions() }
        }
    }

    /// Passes run one after the other without a poll for I/O between them, and the most.
    private var passesInARow = 0
    private static let passesInARowAtMost = 4

    // MARK: Connections

    func register(_ c: ConnectionHandler) -> Bool {
        guard !shuttingDown, connections.count < config.maxConnections else { return false }
        connections[ObjectIdentifier(c)] = c
        return true
    }

    func unregister(_ c: ConnectionHandler) {
        connections[ObjectIdentifier(c)] = nil
    }

    // MARK: Dispatch

    /// Tasks handed to workers whose claim the writer has not committed yet: the next
    /// read of the ready table must skip them. The writer takes each out once its claim
    /// is committed, on its own thread: hopping to the loop for that would wake it once
    /// more for every delivery. (A read that copied the set before that sees the claim
    /// committed: skipping the task then changes nothing.)
    private let claiming = NIOLockedValueBox(Set<TaskID>())

    /// Hands available tasks of `queue` to its idle workers, longest idle first. The task
    /// is read straight from the store and sent at once; marking it in flight follows
    /// through the writer (a crash before that commits finds it still ready, as it should).
    func dispatch(_ queue: String) {
        // A halted store cannot mark a task in flight: handing it out would only have it
        // done twice.
        guard !shuttingDown, store.haltedBy == nil else { return }
        while let worker = dispatcher.claim(queue) {
            let task: DeliveredTask?
            do throws(StorageError) {
                task = try store.peekReady(queue, skipping: claiming.withLockedValue { $0 })
            } catch {
                logger.error("reading the next task of \(queue) failed: \(error.message)")
                dispatcher.addAvailable(queue, 1)
                worker.becomeIdleLater(in: .milliseconds(200))
                return
            }
            guard let task else {
                // The count was ahead of the store: nothing to hand out after all.
                dispatcher.resetAvailable(queue)
                worker.becomeIdle()
                return
            }
            claiming.withLockedValue { _ = $0.insert(task.id) }
            worker.deliver(task)
            store.submit(.claim(task.id)) { [claiming, logger] result in
                claiming.withLockedValue { _ = $0.remove(task.id) }
                if case .failure(let e) = result, e.code != .halted {
                    logger.error("marking task \(task.id) in flight failed: \(e.message)")
                }
            }
        }
    }

    /// New tasks of `queue` became ready (committed; a new task's flush may still be
    /// under way, and its `OK` waits for it).
    func tasksAvailable(_ queue: String, _ n: Int) {
        guard n > 0 else { return }
        dispatcher.addAvailable(queue, n)
        dispatch(queue)
    }

    /// A task came back from a worker (or a lost one) and went where `to` says.
    func taskReturned(_ to: ReturnedTo) {
        switch to {
        case .ready(let q): tasksAvailable(q, 1)
        case .delayed: scheduleDelayTimer()
        case .failed: break
        }
    }

    /// Tasks on their way back to the front of their queues, not committed yet (see
    /// `returnToFront`).
    private var returning: Set<TaskID> = []

    /// Returns a task a worker lost to the front of its queue.
    func release(_ id: TaskID, of queue: String) {
        returnToFront(.release(id), id: id, of: queue) { [self] result in
            switch result {
            case .success: break
            // A halted store refuses every change and says so once: a line per held task
            // as the broker stops would only bury that one.
            case .failure(let e) where e.code == .halted: break
            case .failure(let e): logger.error("returning task \(id) failed: \(e.message)")
            }
        }
    }

    /// Submits `op`, which puts held task `id` back at the front of `queue` (a release, or
    /// a `REQUEUE` without delay). Until it is committed the queue hands out nothing, so
    /// that no worker is given a task that stood behind it; then the task goes to the
    /// queue's longest-idle worker (or to the failed store, past the delivery limit).
    /// `completion` runs once the change is done: durable for a `REQUEUE`, committed for
    /// a release (which needs no flush: a crash returns the task all the same).
    func returnToFront(_ op: StoreOperation, id: TaskID, of queue: String,
                       _ completion: @escaping @Sendable (Result<StoreOutcome, StorageError>) -> Void) {
        returning.insert(id)
        dispatcher.beginReturn(queue)
        submit(op, committed: { [self] outcome in
            returned(id, of: queue, outcome)
        }) { [self] result in
            // Without a flush to wait for (or after a failure) this is the first word.
            // After `committed` it finds nothing to do.
            switch result {
            case .success(let outcome): returned(id, of: queue, outcome)
            case .failure: returned(id, of: queue, nil)
            }
            completion(result)
        }
    }

    /// Ends `id`'s return to `queue` the first time it is called: the queue hands out
    /// again, the returned task first if it is back there.
    private func returned(_ id: TaskID, of queue: String, _ outcome: StoreOutcome?) {
        guard returning.remove(id) != nil else { return }
        dispatcher.endReturn(queue)
        if case .returned(.ready(let q)) = outcome, q == queue {
            tasksAvailable(q, 1)
        } else {
            // Not back in this queue (failed past the delivery limit, not held, or the
            // change failed): what stood behind it may go now.
            if case .returned(let to) = outcome { taskReturned(to) }
            dispatch(queue)
        }
    }

    // MARK: Timers

    func scheduleDelayTimer() {
        guard !shuttingDown, let due = try? store.nextDelayedDue() else { return }
        if let at = delayTimerAt, at <= due { return }
        delayTimer?.cancel()
        delayTimerAt = due
        let wait = max(0, due - currentMillis()) + 1
        delayTimer = loop.scheduleTask(in: .milliseconds(wait)) { [self] in
            delayTimerAt = nil
            submit(.promoteDue) { [self] result in
                if case .success(.promoted(let perQueue)) = result {
                    for (q, n) in perQueue { tasksAvailable(q, n) }
                }
                scheduleDelayTimer()
            }
        }
    }

    private func prune(retention: Millis) {
        guard !shuttingDown else { return }
        submit(.prune(olderThan: currentMillis() - retention, limit: 1000)) { [self] result in
            switch result {
            case .success(.pruned(let n)):
                if n > 0 { logger.info("retention pruned \(n) failed tasks") }
                if n == 1000 { prune(retention: retention) }
            case .failure(let e): logger.error("retention failed: \(e.message)")
            default: break
            }
        }
    }

    // MARK: Reads

    /// What `STATS` needs from the loop: the workers per queue and the connections.
    func liveStats() -> (workers: [String: Int], connections: Int) {
        var workers: [String: Int] = [:]
        for (name, q) in dispatcher.queues where q.workers > 0 { workers[name] = q.workers }
        return (workers, connections.count)
    }

    /// The `STATS` reply: the store's counts with `live` from the loop. Off the loop: with
    /// thousands of queues, reading and encoding takes milliseconds.
    static func stats(_ store: TaskStore, live: (workers: [String: Int], connections: Int)) throws(StorageError) -> StatsReply {
        var queues: [String: QueueStats] = [:]
        for (name, c) in try store.counts() {
            queues[name] = QueueStats(ready: c.ready, inflight: c.inflight, failed: c.failed, workers: 0, delayed: c.delayed)
        }
        for (name, n) in live.workers {
            queues[name, default: QueueStats(ready: 0, inflight: 0, failed: 0, workers: 0, delayed: 0)].workers = n
        }
        return StatsReply(queues: queues, pruned: try store.prunedCount(), connections: live.connections)
    }

    // MARK: Shutdown

    /// Stops handing out tasks and closes every connection, returning held tasks.
    func shutDown() {
        loop.assertInEventLoop()
        shuttingDown = true
        delayTimer?.cancel()
        retentionTask?.cancel()
        for c in connections.values { c.closeForShutdown() }
    }
}
