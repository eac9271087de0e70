import Foundation

/// The durable task store: every queue, in-flight task and failure of a broker, in one
/// LMDB environment in a data directory, with a redo log beside it.
///
/// Changes go through ``submit(_:completion:)``. One writer thread applies all the
/// changes waiting at that moment in one write transaction (group commit) and writes the
/// batch's record to the redo log; a second thread then flushes the log with one
/// `fdatasync` and only then completes the durable changes. While it flushes, the writer
/// already applies the next batch, so a change that need not be durable (taking a task
/// for delivery) never waits for a flush. A third thread checkpoints LMDB's own file
/// every 10 ms, off every caller's path (docs/storage.md, "Checkpoints"); at open, the
/// logged batches that file lacks are applied again. Callers are completed on those
/// threads: hop to your own executor before touching your state.
public final class TaskStore: @unchecked Sendable {
    /// How to open a store.
    public struct Configuration: Sendable {
        /// The data directory; created when missing.
        public var directory: String
        /// Starting size of the memory map.
        public var initialMapSize: Int = 64 << 20
        /// The most the store may grow to; past it, writes fail with `storageFull`.
        public var maxMapSize: Int = 256 << 30
        /// A task delivered this many times that comes back without ACK or NACK goes to
        /// the failed store (0: no limit).
        public var maxDeliveries: Int = 10
        /// How often LMDB's file is checkpointed in the background (the redo log keeps
        /// every change in between); also whenever a log file is half full. Until the next
        /// checkpoint, LMDB reuses no page it frees, so a shorter interval keeps the file
        /// smaller (the pages written per commit are the same).
        public var dataFlushInterval: Duration = .milliseconds(10)
        /// Off: LMDB's file is flushed only by ``TaskStore/flushData()`` and at close (for
        /// tests that simulate losing its unflushed pages).
        public var flushesDataInBackground = true
        /// Called once, on one of the store's threads, when the store halts: a flush of
        /// the redo log or of LMDB's file failed (see ``TaskStore/haltedBy``).
        public var halted: (@Sendable (StorageError) -> Void)?
        /// How much of each redo-log file is written before the writer moves on to the
        /// other. Small on purpose: on ext4 an `fdatasync` of a 4 MiB file took about
        /// 1.35 times as long as of a 256 KiB one, the same bytes written (docs/storage.md).
        public var logFileSize: Int = 256 << 10
        /// At open, LMDB's file is compacted (rewritten without its free pages) when it is
        /// at least this big and at most half of it is live: after a backlog drained, new
        /// pages then go to the end of a small file again (docs/storage.md, "Compaction").
        /// Nil: never.
        public var compactFilesFrom: Int? = 16 << 20
        /// ...unless more than this much of it is live (the copy delays the open).
        public var compactLiveAtMost: Int = 256 << 20
        /// While the store runs, how often it looks whether LMDB's file is worth compacting
        /// (at least ``compactFilesFrom`` big and as much free, at most three quarters
        /// live, and at most ``compactLiveWhileRunningAtMost`` live). The copy is written
        /// on a thread of its own while changes go on; they wait only while it is put in
        /// place and caught up with them. Nil: only at open.
        ///
        /// A quarter free is enough while running, where at open half must be: the free
        /// pages a drained backlog leaves are scattered over the file, and every
        /// checkpoint writes the pages LMDB reuses from among them one by one (three times
        /// as many write requests; `together` 30–45% slower, paced p99 twice as long in
        /// docs/benchmarks-history.md). An open that compacts delays `listening` by the
        /// copy. The free room asked for keeps a store from compacting for the few MiB of
        /// pages that its checkpoints hold back under load.
        public var compactCheckInterval: Duration? = .seconds(10)
        /// The most live data compacted while the store runs: the longer the copy takes,
        /// the more batches it must catch up with while changes wait (and a growth of the
        /// map waits for the copy). With ~125 MiB live under full load, changes waited
        /// 4–16 ms.
        public var compactLiveWhileRunningAtMost: Int = 256 << 20
        /// Called on the writer's thread after a compaction while the store runs, with the
        /// file's sizes before and after and how long changes waited for it.
        public var compacted: (@Sendable (_ before: Int, _ after: Int, _ took: Duration) -> Void)?
        /// For tests: runs on the copying thread once a compacted copy is written, before
        /// the writer hears of it (changes committed meanwhile are to be applied to it).
        var afterCompactedCopy: (@Sendable () -> Void)?
        /// For tests: how many failures a `REPLAY` or `DELETE` removes at a time (the
        /// records of one slice are held in memory at once).
        var failuresPerSlice = 8192
        /// A batch that replays, deletes or prunes at least this many failures has LMDB's
        /// environment opened again once a checkpoint holds it: LMDB keeps a copy of
        /// every page a write transaction changed for its later transactions, about 7 KiB
        /// per such failure, until the environment closes (docs/storage.md, "Memory").
        /// Above the broker's retention batches of 1,000, which then reuse one another's.
        public var reopenAfterRemovingFailures = 2000
        /// Called on the writer's thread after LMDB's environment was opened again for
        /// that reason, with how long changes waited for it.
        public var reopened: (@Sendable (_ took: Duration) -> Void)?
        /// Called on the writer's thread with the queues whose stored counts were found
        /// damaged and counted again from the tables (the batch went through).
        public var countsRepaired: (@Sendable (_ queues: [String]) -> Void)?

        /// A configuration for `directory` with the defaults.
        public init(directory: String) { self.directory = directory }
    }

    /// A completion: the outcome of one operation.
    public typealias Completion = @Sendable (Result<StoreOutcome, StorageError>) -> Void

    private struct Pending {
        var op: StoreOperation
        var committed: (@Sendable (StoreOutcome) -> Void)?
        var completion: Completion
    }

    private let engine: StoreEngine
    private let writerCondition = NSCondition()
    private var pending: [Pending] = []
    /// Asked of the writer by a checkpoint: a snapshot pinned between two batches.
    private var snapshotWanted = false
    private var snapshot: Result<Checkpoint, StorageError>?
    private var closing = false
    private var writerDone = false
    private let syncCondition = NSCondition()
    private var toSync: [(Completion, StoreOutcome)] = []
    /// Whether a flush is under way (by the flusher thread or the writer).
    private var syncing = false
    private let dataFlushInterval: Duration
    private let flushesDataInBackground: Bool
    private let halted: (@Sendable (StorageError) -> Void)?
    private let runningCompaction: (policy: StoreEngine.Compaction, every: Duration)?
    private let compactedCallback: (@Sendable (Int, Int, Duration) -> Void)?
    private let reopenedCallback: (@Sendable (Duration) -> Void)?
    private let countsRepairedCallback: (@Sendable ([String]) -> Void)?
    /// Asked of the writer by the flusher: see whether the file is worth compacting.
    private var compactionWanted = false
    private var compactions = 0
    /// How many times LMDB's file was compacted while the store ran.
    public var compactionsWhileRunning: Int { haltLock.withLock { compactions } }
    private var appliedAgain = 0
    /// How many batches, committed while a compacted copy was written, were applied to
    /// it again (for tests).
    var batchesAppliedToCopies: Int { haltLock.withLock { appliedAgain } }
    /// Asked of the writer by the flusher: a checkpoint holds a batch that replayed,
    /// deleted or pruned many failures; open LMDB's environment again to free the page
    /// copies it keeps from it (see ``StoreEngine/reopenEnvironment()``).
    private var reopenWanted = false
    private var reopens = 0
    /// How many times LMDB's environment was opened again to free memory (for tests).
    var environmentReopens: Int { haltLock.withLock { reopens } }
    private let haltLock = NSLock()
    private var haltError: StorageError?
    private let flusherCondition = NSCondition()
    private var flusherStop = false
    private var flusherDone = false
    private var flushWanted = false
    /// How many logged batches were applied again at open.
    public let replayedAtOpen: Int
    private var syncerStop = false
    private var syncerDone = false
    /// The size of LMDB's file before and after, when it was compacted at open.
    public let compactedAtOpen: (before: Int, after: Int)?
    /// How many tasks were returned from in flight at open.
    public let recoveredAtOpen: Int
    /// The number of the last group commit (batches are numbered in commit order; for
    /// figures: the difference over a stretch is how many commits it made).
    public var batchNumber: UInt64 { engine.committedBatch }
    /// How many flushes the store has done (for tests and figures).
    public var syncCount: Int { syncCondition.lock(); defer { syncCondition.unlock() }; return syncs }
    private var syncs = 0

    /// Opens the store in `configuration.directory`, returning every task that was in
    /// flight to the front of its queue.
    public init(_ configuration: Configuration) throws(StorageError) {
        var options = LMDBEnvironment.Options()
        options.initialMapSize = configuration.initialMapSize
        options.maxMapSize = configuration.maxMapSize
        engine = try StoreEngine(directory: configuration.directory, options: options, maxDeliveries: configuration.maxDeliveries,
                                 logFileSize: configuration.logFileSize,
                                 compaction: configuration.compactFilesFrom.map {
                                     StoreEngine.Compaction(minFileBytes: $0, maxLiveBytes: configuration.compactLiveAtMost)
                                 })
        engine.failuresPerSlice = configuration.failuresPerSlice
        engine.failuresBeforeReopen = configuration.reopenAfterRemovingFailures
        compactedAtOpen = engine.compactedAtOpen
        if let from = configuration.compactFilesFrom, let every = configuration.compactCheckInterval {
            runningCompaction = (StoreEngine.Compaction(minFileBytes: from, maxLiveBytes: configuration.compactLiveWhileRunningAtMost,
                                                        maxLiveShare: 0.75, minFreeBytes: from), every)
        } else {
            runningCompaction = nil
        }
        compactedCallback = configuration.compacted
        reopenedCallback = configuration.reopened
        countsRepairedCallback = configuration.countsRepaired
        engine.afterCompactedCopy = configuration.afterCompactedCopy
        dataFlushInterval = configuration.dataFlushInterval
        flushesDataInBackground = configuration.flushesDataInBackground
        halted = configuration.halted
        replayedAtOpen = try engine.replayLog()
        recoveredAtOpen = try engine.recover()
        let writer = Thread { [unowned self] in Self.nameThread("tortoise-writer"); self.writerLoop() }
        writer.start()
        let syncer = Thread { [unowned self] in Self.nameThread("tortoise-sync"); self.syncLoop() }
        syncer.start()
        let flusher = Thread { [unowned self] in Self.nameThread("tortoise-data-flush"); self.flushLoop() }
        flusher.start()
    }

    /// Names the calling thread, so that `top -H` shows it.
    private static func nameThread(_ name: String) {
        #if os(Linux)
        let fd = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        _ = name.withCString { write(fd, $0, strlen($0)) }
        _ = Glibc.close(fd)
        #endif
    }

    /// Submits a change. `completion` runs once it is applied, and, for a durable
    /// operation (see ``StoreOperation/isDurable``), once it is on disk. `committed`, if
    /// given, runs as soon as a durable change that succeeded is visible to readers, while
    /// its flush is still under way (a broker can hand a new task to a worker then, as
    /// RabbitMQ delivers before it confirms; the `OK` still waits for the flush).
    public func submit(_ op: StoreOperation, committed: (@Sendable (StoreOutcome) -> Void)? = nil,
                       completion: @escaping Completion) {
        writerCondition.lock()
        if closing {
            writerCondition.unlock()
            completion(.failure(StorageError(.closed, "the store is closed")))
            return
        }
        if let halt = haltedBy {
            writerCondition.unlock()
            completion(.failure(halt))
            return
        }
        pending.append(Pending(op: op, committed: committed, completion: completion))
        // Broadcast: a checkpoint's request for a snapshot may wait on this condition too,
        // and a signal that woke it instead of the writer would leave the change waiting.
        if pending.count == 1 { writerCondition.broadcast() }
        writerCondition.unlock()
    }

    /// Submits a change and waits for its completion.
    public func perform(_ op: StoreOperation) async throws(StorageError) -> StoreOutcome {
        let result: Result<StoreOutcome, StorageError> = await withCheckedContinuation { cont in
            submit(op) { cont.resume(returning: $0) }
        }
        return try result.get()
    }

    /// Finishes every submitted change, flushes, and stops the threads. Later submissions
    /// fail with `closed`. Blocks; call it off any event loop.
    public func close() {
        writerCondition.lock()
        closing = true
        writerCondition.broadcast()
        while !writerDone { writerCondition.wait() }
        writerCondition.unlock()
        syncCondition.lock()
        syncerStop = true
        syncCondition.signal()
        while !syncerDone { syncCondition.wait() }
        syncCondition.unlock()
        flusherCondition.lock()
        flusherStop = true
        flusherCondition.signal()
        while !flusherDone { flusherCondition.wait() }
        flusherCondition.unlock()
        // A halted store's file may lack pages that a failed flush lost while the page
        // cache calls them written: a checkpoint now could record a tree that is not
        // whole on disk. The next open starts from the last good checkpoint and the log.
        if haltedBy == nil { try? engine.checkpoint() }
        engine.shutDown()
    }

    /// Why the store halted, if it did: a flush of the redo log or of LMDB's file failed.
    ///
    /// On Linux a failed flush may leave the pages it could not write marked clean, and it
    /// reports the error once: a later flush can succeed without them. A store that went
    /// on would confirm later changes while an earlier one never reached the disk, and a
    /// power cut would then lose confirmed changes (replay stops at the hole). So after one
    /// failed flush the store refuses every change (each fails with ``StorageError/Code/halted``)
    /// and takes no checkpoint; reads go on. Opening it again (after a restart of the
    /// process) rebuilds the state from the last checkpoint and the log.
    public var haltedBy: StorageError? { haltLock.withLock { haltError } }

    /// Halts the store (the first error wins) and tells the owner, if this halted it,
    /// unless `tell` is false (then the caller calls ``Configuration/halted`` itself once
    /// its callers have their errors). The error changes fail with, and whether it is new.
    @discardableResult
    private func halt(_ error: StorageError, tell: Bool = true) -> (error: StorageError, isNew: Bool) {
        let (first, isNew) = haltLock.withLock { () -> (StorageError, Bool) in
            if let haltError { return (haltError, false) }
            let e = StorageError(.halted, "\(error.message); the store takes no more changes until it is opened again")
            haltError = e
            return (e, true)
        }
        if tell && isNew { halted?(first) }
        return (first, isNew)
    }

    private func writerLoop() {
        while true {
            writerCondition.lock()
            while pending.isEmpty && !closing && !snapshotWanted && !compactionWanted && !reopenWanted { writerCondition.wait() }
            if snapshotWanted {
                // Taken between batches, without holding up submitters.
                snapshotWanted = false
                writerCondition.unlock()
                let taken: Result<Checkpoint, StorageError>
                do throws(StorageError) { taken = .success(try engine.takeSnapshot()) } catch { taken = .failure(error) }
                writerCondition.lock()
                snapshot = taken
                writerCondition.broadcast()
                writerCondition.unlock()
                continue
            }
            if reopenWanted && !closing {
                reopenWanted = false
                writerCondition.unlock()
                if haltedBy == nil {
                    do throws(StorageError) {
                        let start = ContinuousClock.now
                        if try engine.reopenEnvironment() {
                            haltLock.withLock { reopens += 1 }
                            reopenedCallback?(ContinuousClock.now - start)
                        }
                    } catch {
                        halt(StorageError(error.code, "opening the store's file again failed (\(error.message))"))
                    }
                }
                continue
            }
            if compactionWanted && !closing {
                compactionWanted = false
                writerCondition.unlock()
                compactIfWorthIt()
                continue
            }
            if pending.isEmpty && closing {
                writerDone = true
                writerCondition.broadcast()
                writerCondition.unlock()
                return
            }
            let batch = pending
            pending = []
            writerCondition.unlock()

            if let halt = haltedBy {
                for item in batch { item.completion(.failure(halt)) }
                continue
            }
            let results = engine.apply(batch.map(\.op))
            if !engine.repairedByLastBatch.isEmpty { countsRepairedCallback?(engine.repairedByLastBatch) }
            if let failure = engine.checkpointFailure {
                // A checkpoint the writer took to free pages (the map was full) failed.
                halt(StorageError(failure.code, "checkpointing the store's file failed (\(failure.message))"))
            }
            if let failure = engine.retractionFailure {
                // A failed batch's record may be on disk whole: it must not be followed.
                halt(StorageError(.io, "flushing the redo log to disk failed (\(failure.message)): a change that failed may be on disk"))
            }
            if engine.log.takeHalfFull() && flushesDataInBackground {
                flusherCondition.lock()
                flushWanted = true
                flusherCondition.signal()
                flusherCondition.unlock()
            }
            var durable: [(Completion, StoreOutcome)] = []
            for (item, result) in zip(batch, results) {
                if item.op.isDurable, case .success(let outcome) = result {
                    item.committed?(outcome)
                    durable.append((item.completion, outcome))
                } else {
                    item.completion(result)
                }
            }
            if !durable.isEmpty {
                writerCondition.lock()
                let nobodyWaits = pending.isEmpty
                writerCondition.unlock()
                syncCondition.lock()
                if nobodyWaits && toSync.isEmpty && !syncing {
                    // Nothing to overlap the flush with: flush here rather than wake the
                    // flusher (a wake-up of a thread that slept costs 6-16 µs at the
                    // median on this machine, more at p99; docs/benchmarks-history.md).
                    syncing = true
                    syncCondition.unlock()
                    flushAndComplete(durable)
                } else {
                    toSync.append(contentsOf: durable)
                    syncCondition.signal()
                    syncCondition.unlock()
                }
            }
        }
    }

    /// Compacts LMDB's file if it is worth it (between batches, on the writer's thread):
    /// starts the copy, or puts a finished one in place.
    private func compactIfWorthIt() {
        guard let running = runningCompaction, haltedBy == nil else { return }
        do throws(StorageError) {
            let start = ContinuousClock.now
            if engine.compactionUnderWay {
                // Nil: not done yet, or the copy failed and was dropped (the next check
                // tries again).
                if let c = try engine.finishCompaction() {
                    haltLock.withLock { compactions += 1; appliedAgain += c.replayed }
                    compactedCallback?(c.before, c.after, ContinuousClock.now - start)
                }
            } else {
                _ = engine.startCompaction(policy: running.policy) { [weak self] in
                    // The copy is done: the writer puts it in place between two batches.
                    guard let self else { return }
                    self.writerCondition.lock()
                    self.compactionWanted = true
                    self.writerCondition.broadcast()
                    self.writerCondition.unlock()
                }
            }
        } catch {
            halt(StorageError(error.code, "compacting the store's file failed (\(error.message))"))
        }
    }

    /// Flushes what the log wrote (every record of `batch` among it), completes `batch`,
    /// and ends the flush begun by setting `syncing`.
    private func flushAndComplete(_ batch: [(Completion, StoreOutcome)]) {
        let result: Result<Void, StorageError>
        var haltedNow = false
        if let halt = haltedBy {
            // An earlier batch's record may be missing from the disk: this one, behind it
            // in the log, would not be found at the next open either.
            result = .failure(halt)
        } else {
            do throws(StorageError) {
                try engine.log.flushWritten()
                result = .success(())
            } catch {
                let halt = halt(StorageError(.io, "flushing the redo log to disk failed (\(error.message)): the change may not be on disk"),
                                tell: false)
                haltedNow = halt.isNew
                result = .failure(halt.error)
            }
        }
        syncCondition.lock()
        syncs += 1
        syncing = false
        // Batches that came while this flush ran wait for the flusher thread.
        if !toSync.isEmpty { syncCondition.signal() }
        syncCondition.unlock()
        for (completion, outcome) in batch {
            switch result {
            case .success: completion(.success(outcome))
            case .failure(let e): completion(.failure(e))
            }
        }
        // The owner hears of the halt after the callers had their errors (a broker that
        // stops on it still sends them their replies).
        if haltedNow, case .failure(let e) = result { halted?(e) }
    }

    private func syncLoop() {
        while true {
            syncCondition.lock()
            // One flush at a time, so that completions keep the order of their batches.
            while (toSync.isEmpty || syncing) && !syncerStop { syncCondition.wait() }
            if toSync.isEmpty && syncerStop {
                syncerDone = true
                syncCondition.broadcast()
                syncCondition.unlock()
                return
            }
            while syncing { syncCondition.wait() }
            let batch = toSync
            toSync = []
            syncing = true
            syncCondition.unlock()
            flushAndComplete(batch)
        }
    }

    /// Checkpoints every ``Configuration/dataFlushInterval``, or when the writer asks, if
    /// something was committed: the writer pins the latest snapshot, LMDB's file is
    /// flushed, and the snapshot is recorded in the checkpoint file; the older snapshot's
    /// pages become free to reuse and the log may drop what the new one holds.
    private func flushLoop() {
        var flushed = engine.committedBatch
        var nextCompactionCheck = runningCompaction.map { ContinuousClock.now + $0.every }
        flusherCondition.lock()
        while !flusherStop {
            let (s, a) = dataFlushInterval.components
            let seconds = Double(s) + Double(a) / 1e18
            if !flushWanted { _ = flusherCondition.wait(until: Date(timeIntervalSinceNow: seconds)) }
            if flusherStop { break }
            flushWanted = false
            flusherCondition.unlock()
            if let due = nextCompactionCheck, ContinuousClock.now >= due {
                nextCompactionCheck = ContinuousClock.now + runningCompaction!.every
                writerCondition.lock()
                compactionWanted = true
                writerCondition.broadcast()
                writerCondition.unlock()
            }
            let committed = engine.committedBatch
            var writerStopped = false
            if flushesDataInBackground, committed > flushed, haltedBy == nil {
                do throws(StorageError) {
                    if let snapshot = try snapshotFromWriter() {
                        try engine.persist(snapshot)
                        flushed = snapshot.batch
                        if let big = engine.reopenAfterBatch, big <= flushed {
                            // Its pages are on disk: reopening costs the writer little now.
                            writerCondition.lock()
                            reopenWanted = true
                            writerCondition.broadcast()
                            writerCondition.unlock()
                        }
                    } else {
                        writerStopped = true  // close() checkpoints last
                    }
                } catch {
                    halt(StorageError(error.code, "checkpointing the store's file failed (\(error.message))"))
                }
            }
            flusherCondition.lock()
            if writerStopped { break }
        }
        flusherDone = true
        flusherCondition.broadcast()
        flusherCondition.unlock()
    }

    /// Flushes LMDB's file now (for tests that turn ``Configuration/flushesDataInBackground`` off).
    public func flushData() throws(StorageError) {
        if let halt = haltedBy { throw halt }
        guard let snapshot = try snapshotFromWriter() else { throw StorageError(.closed, "the store is closed") }
        do throws(StorageError) {
            try engine.persist(snapshot)
        } catch {
            throw halt(StorageError(error.code, "checkpointing the store's file failed (\(error.message))")).error
        }
    }

    /// Has the writer pin the latest snapshot between two batches; nil once it has stopped.
    private func snapshotFromWriter() throws(StorageError) -> Checkpoint? {
        writerCondition.lock()
        defer { writerCondition.unlock() }
        while snapshotWanted || snapshot != nil {
            if writerDone { return nil }
            writerCondition.wait()
        }
        snapshotWanted = true
        writerCondition.broadcast()
        while snapshot == nil && !writerDone { writerCondition.wait() }
        defer { snapshot = nil; writerCondition.broadcast() }
        return try snapshot?.get()
    }

    /// The store format recorded in the data directory (for checks).
    func engineFormat() throws(StorageError) -> UInt32 {
        try engine.read { (txn) throws(StorageError) in
            guard let f = try txn.get(engine.t.meta, Array("format".utf8)) else { return 0 }
            var r = ByteReader(f)
            return try r.u32()
        }
    }

    /// How many times the writer moved to the other redo-log file.
    public var logSwitches: Int { engine.log.switches }

    // MARK: Reads (any thread; each in its own read transaction)

    /// The counts of every queue that holds anything.
    public func counts() throws(StorageError) -> [String: QueueCounts] { try engine.counts() }

    /// How many failures retention has removed since the data directory was created.
    public func prunedCount() throws(StorageError) -> Int { try engine.pruned() }

    /// The front ready task of `queue` whose id is not in `skipping` (tasks handed out whose
    /// ``StoreOperation/claim(_:)`` is not committed yet), read without the writer, with
    /// the delivery number it gets when claimed. Lets a broker hand a worker its next task
    /// at once; the claim follows through the writer.
    public func peekReady(_ queue: String, skipping: Set<TaskID>) throws(StorageError) -> DeliveredTask? {
        try engine.peekReady(queue, skipping: skipping)
    }

    /// When the soonest delayed task becomes ready, if any waits.
    public func nextDelayedDue() throws(StorageError) -> Millis? { try engine.nextDelayedDue() }

    /// The newest `limit` failures matching `query`, and how many match in all.
    public func failed(_ query: FailedQuery, limit: Int) throws(StorageError) -> FailedPage {
        try engine.read { (txn) throws(StorageError) in try engine.index.search(query, limit: limit, txn) }
    }

    /// The same answer one failure at a time, from one snapshot: `each` gets the newest
    /// `limit` failures matching `query`, newest first, and none is kept in memory; returns
    /// how many match in all.
    public func failed(_ query: FailedQuery, limit: Int,
                       each: (FailedTask) throws(StorageError) -> Void) throws(StorageError) -> Int {
        try engine.read { (txn) throws(StorageError) in try engine.index.search(query, limit: limit, txn, each: each) }
    }

    /// The error groups of the failures matching `query`, most frequent first.
    public func errorGroups(_ query: FailedQuery, limit: Int) throws(StorageError) -> [ErrorGroup] {
        try engine.read { (txn) throws(StorageError) in try engine.index.groups(query, limit: limit, txn) }
    }

    /// The same, counting at most `countedAtOnce` groups at once before it counts them
    /// one at a time (for tests of that way).
    func errorGroups(_ query: FailedQuery, limit: Int, countedAtOnce: Int) throws(StorageError) -> [ErrorGroup] {
        try engine.read { (txn) throws(StorageError) in
            try engine.index.groups(query, limit: limit, txn, countedAtOnce: countedAtOnce)
        }
    }

    /// Every failure, for checks: the brute-force view the indexes must agree with.
    public func allFailures() throws(StorageError) -> [FailedTask] {
        try engine.read { (txn) throws(StorageError) in
            var out: [FailedTask] = []
            try txn.withCursor(engine.t.failed) { (c) throws(StorageError) in
                var e = try c.first()
                while let entry = e {
                    out.append(try FailedTask(id: UInt64(bigEndianBytes: entry.key), decoding: entry.value))
                    e = try c.next()
                }
            }
            return out
        }
    }

    /// The ids of the ready tasks of `queue`, front first (for checks and tools).
    public func readyIDs(_ queue: String, limit: Int = .max) throws(StorageError) -> [TaskID] {
        try engine.read { (txn) throws(StorageError) in
            var out: [TaskID] = []
            let prefix = StoreTables.queuePrefix(queue)
            try txn.withCursor(engine.t.ready) { (c) throws(StorageError) in
                var e = try c.seek(atOrAfter: prefix)
                while let entry = e, entry.key.starts(with: prefix), out.count < limit {
                    out.append(UInt64(bigEndianBytes: entry.value))
                    e = try c.next()
                }
            }
            return out
        }
    }

    /// Bytes the store's file takes and how many failures it holds, for size figures.
    public func sizeFigures() throws(StorageError) -> (indexPages: Int, failedPages: Int, failures: Int, pageSize: Int) {
        try engine.read { (txn) throws(StorageError) in
            let t = engine.t
            var idx = 0
            for db in [t.byTime, t.byWord, t.byQueue, t.byGroup, t.groupQueues] { idx += try txn.pages(db) }
            return (idx, try txn.pages(t.failed), try txn.count(t.failed), 4096)
        }
    }
}
