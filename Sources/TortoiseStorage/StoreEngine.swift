import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The current wall-clock time in milliseconds.
public func currentMillis() -> Millis {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Millis(ts.tv_sec) * 1000 + Millis(ts.tv_nsec / 1_000_000)
}

/// Returns the C heap's free memory to the system where it can (glibc's `malloc_trim`,
/// which Swift's Glibc module does not declare; elsewhere nothing).
func trimHeap() {
    #if canImport(Glibc)
    guard let trim = dlsym(dlopen(nil, RTLD_NOW), "malloc_trim") else { return }
    _ = unsafeBitCast(trim, to: (@convention(c) (Int) -> Int32).self)(0)
    #endif
}

/// The broker's tables and every change to them. Writes run on one thread (the group
/// committer's); reads run anywhere, each in its own read transaction.
final class StoreEngine: @unchecked Sendable {
    /// 1: LMDB flushed at every group commit. 2: a redo log (`wal-0`, `wal-1`) holds
    /// what LMDB's flushed file may not. 3: checkpoints (`checkpoint`), whose snapshot is
    /// put back at open; an older tortoised must not write such a store (it would reuse
    /// the pages of the checkpointed snapshot), so it is refused there.
    static let formatVersion: UInt32 = 3

    let env: LMDBEnvironment
    let t: StoreTables
    let index: FailedIndex
    var maxDeliveries: Int
    /// How many failures a `REPLAY`, `DELETE` or prune loads and removes at a time.
    var failuresPerSlice = 8192
    let log: RedoLog
    let checkpoints: CheckpointFile
    private let checkpointLock = NSLock()
    private let lockFD: Int32
    /// The number of the last batch committed (writer-only; see ``committedBatch``).
    private(set) var batchNumber: UInt64 = 0
    private let committedLock = NSLock()
    private var committed: UInt64 = 0
    /// The error of a failed flush of a taken-back log record, if one failed: that
    /// record may be on disk whole while its batch failed, and the store must halt
    /// (writer-only).
    private(set) var retractionFailure: StorageError?
    // Writer-only state.
    private var nextID: UInt64 = 1
    private var nextSeq: UInt64 = 1
    /// The stored bounds: every id and seq below them may have been used. They move in
    /// steps, so that most commits do not rewrite the `meta` page.
    private var idLimit: UInt64 = 1
    private var seqLimit: UInt64 = 1
    private var pendingLimits: (UInt64, UInt64)?
    /// The counts of the queues the batch being applied changed.
    private var batchCounts: [String: QueueCounts] = [:]
    /// Queues of this batch whose stored counts could not be read: counted again from
    /// the tables when the batch saves its counts.
    private var recountQueues: Set<String> = []
    /// How many damaged queue counts were counted again from the tables (writer-only).
    private(set) var countsRepaired = 0
    /// The queues whose damaged counts the last batch counted again (writer-only).
    private(set) var repairedByLastBatch: [String] = []
    static let reservation: UInt64 = 4096
    /// The `meta` key of the number of the last batch committed (the redo log's mark).
    static let walBatchKey = Array("wal_batch".utf8)

    /// When LMDB's file is compacted (see ``compactIfMostlyFree(directory:options:policy:)``
    /// and ``startCompaction(policy:copied:)``).
    struct Compaction: Sendable {
        /// Smaller files are left as they are.
        var minFileBytes: Int
        /// Files with more live data than this are left as they are (the copy delays the
        /// open; while running, changes wait for the copy to catch up).
        var maxLiveBytes: Int
        /// Files with a bigger share of live data than this are left as they are.
        var maxLiveShare: Double = 0.5
        /// Files with less free room than this are left as they are.
        var minFreeBytes: Int = 0

        /// Whether a file of `fileBytes` with `liveBytes` of live data is worth compacting.
        func allows(liveBytes: Int, fileBytes: Int) -> Bool {
            fileBytes >= minFileBytes && liveBytes <= maxLiveBytes
                && Double(liveBytes) <= maxLiveShare * Double(fileBytes) && fileBytes - liveBytes >= minFreeBytes
        }
    }

    /// The data directory.
    let directory: String

    /// The file's size before and after, if it was compacted at open.
    private(set) var compactedAtOpen: (before: Int, after: Int)?

    init(directory: String, options: LMDBEnvironment.Options, maxDeliveries: Int, logFileSize: Int,
         compaction: Compaction? = nil) throws(StorageError) {
        self.directory = directory
        if mkdir(directory, 0o750) == 0 {
            // The new directory's own entry must be on disk before anything in it counts
            // as durable (the files' entries are flushed once the redo log exists).
            let parent = directory.contains("/") ? String(directory[..<directory.lastIndex(of: "/")!]) : "."
            _ = fsyncDirectory(parent.isEmpty ? "/" : parent)
        } else if errno != EEXIST {
            throw StorageError(.io, "cannot create the data directory \(directory): \(String(cString: strerror(errno)))")
        }
        let fd = open(directory + "/LOCK", O_RDWR | O_CREAT | O_CLOEXEC, 0o640)
        if fd < 0 { throw StorageError(.io, "cannot open \(directory)/LOCK: \(String(cString: strerror(errno)))") }
        // A child process that another thread of this process is starting holds a copy of
        // every open file until it runs its program, and the lock of a store closed just
        // before with it: a store opened again meanwhile (tests that start helpers, a host
        // that spawns) would find its own old lock held. So a held lock is tried again for
        // a quarter of a second before the directory counts as another process's.
        var tries = 0
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            tries += 1
            if (errno != EWOULDBLOCK && errno != EINTR) || tries > 50 {
                close(fd)
                throw StorageError(.locked, "the data directory \(directory) is in use by another process (its LOCK file is held)")
            }
            usleep(5000)
        }
        lockFD = fd
        var opts = options
        opts.maxDatabases = StoreTables.tableCount + 2
        do throws(StorageError) {
            // The last checkpointed snapshot is whole on disk; a newer meta page may not
            // be (a power cut during a background flush): start from the checkpoint, and
            // the redo log brings back the rest.
            let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
            unlink(directory + "/" + Self.compactName)  // a copy that a crash cut short
            if let c = CheckpointFile.latest(in: directory, pageSize: pageSize) {
                try LMDBEnvironment.restoreMeta(directory: directory, page: c.metaPage)
                if let compaction {
                    compactedAtOpen = Self.compactIfMostlyFree(directory: directory, options: opts, policy: compaction)
                }
            }
            let hasCheckpoint = CheckpointFile.latest(in: directory, pageSize: pageSize) != nil
            env = try LMDBEnvironment(directory: directory, options: opts)
            checkpoints = try CheckpointFile(directory: directory, pageSize: env.pageSize)
            // Its pages must stay as they are until the next checkpoint is on disk.
            let pinned = try env.pinLatestSnapshot()
            if !hasCheckpoint && pinned > 0 {
                // A whole snapshot without a checkpoint (a compacted file, or a compaction
                // a crash cut short, or an older format): record it before anything is
                // written, so that a power cut during the first commits finds it. (Its
                // batch number is not read at open: the `wal_batch` key inside it is.)
                try env.sync()
                guard let page = try env.metaPage(for: pinned) else {
                    throw StorageError(.corrupt, "the meta page of transaction \(pinned) is not in the store's file")
                }
                try checkpoints.write(Checkpoint(txnid: pinned, batch: 0, metaPage: page))
            }
            t = try StoreTables(env: env)
        } catch {
            close(fd)
            throw error
        }
        index = FailedIndex(t: t)
        self.maxDeliveries = maxDeliveries
        do {
            log = try RedoLog(directory: directory, fileSize: logFileSize)
        } catch {
            close(fd)
            throw error
        }
        ballastPath = directory + "/RESERVE"
        ballastBytes = max(1 << 20, min(8 << 20, options.maxMapSize / 32))
        if !Self.allocateBallast(ballastPath, ballastBytes) { diskFullRetryAt = 0 }
        try env.withWriteTransaction { (txn) throws(StorageError) in
            if let f = try txn.get(t.meta, Array("format".utf8)) {
                var r = ByteReader(f)
                let v = try r.u32()
                if v > Self.formatVersion {
                    throw StorageError(.formatTooNew, "the data directory \(directory) has store format \(v), newer than this tortoised understands (\(Self.formatVersion)); use a newer tortoised")
                }
            }
            var w = ByteWriter(); w.u32(Self.formatVersion)
            try txn.put(t.meta, Array("format".utf8), w.bytes)
            // Ids and seqs below the stored bounds may have been handed out: start past them.
            nextID = try metaNumber("next_id", txn) ?? 1
            nextSeq = try metaNumber("next_seq", txn) ?? 1
            idLimit = nextID
            seqLimit = nextSeq
            batchNumber = try txn.get(t.meta, Self.walBatchKey).map { UInt64(bigEndianBytes: $0) } ?? 0
        }
        // Made durable by the checkpoint that ``replayLog()`` takes next.
        committed = batchNumber
    }

    static let compactName = "data.mdb.compact"

    /// Compacts LMDB's file when at most half of it is live (a backlog came and went):
    /// LMDB reuses free pages before it grows the file, and pages scattered over a big file
    /// make every checkpoint many small writes instead of a few large ones (30–50% fewer
    /// operations a second in `tortoise-bench storage --drained-backlog`). Runs at open,
    /// after the checkpoint's meta page is back in the file and before the store's
    /// environment opens. Every step leaves a directory that opens whole after a crash:
    /// the copy is flushed before anything changes; the `checkpoint` file goes first (the
    /// old file, whose meta pages both hold the checkpoint now, opens as it is); then the
    /// copy takes the old file's place; the open then checkpoints the copy before writing.
    /// Returns the file's sizes before and after, or nil when it was left as it is
    /// (including when a step failed: the open goes on with what is there).
    static func compactIfMostlyFree(directory: String, options: LMDBEnvironment.Options,
                                    policy: Compaction) -> (before: Int, after: Int)? {
        let path = directory + "/data.mdb"
        let copy = directory + "/" + compactName
        var st = stat()
        guard stat(path, &st) == 0, Int(st.st_size) >= policy.minFileBytes else { return nil }
        let before = Int(st.st_size)
        guard let probe = try? LMDBEnvironment(directory: directory, options: options) else { return nil }
        let copied = writeCompactCopyIfMostlyFree(probe, fileBytes: before, policy: policy, to: copy)
        probe.close()
        guard copied else { return nil }
        guard CheckpointFile.remove(in: directory) else {
            unlink(copy)
            return nil
        }
        // Freeing the old file is left to a thread of its own: the open waits meanwhile.
        guard replaceKeepingOldOpen(path, with: copy), fsyncDirectory(directory), stat(path, &st) == 0 else { return nil }
        return (before, Int(st.st_size))
    }

    /// A compacted copy being written in the background while the store runs.
    private final class CopyJob: @unchecked Sendable {
        /// The file's size when the copy began.
        let before: Int
        /// The last batch committed when the copy began: the copy holds at least this one.
        let startBatch: UInt64
        private let condition = NSCondition()
        private var result: Result<Void, StorageError>?
        init(before: Int, startBatch: UInt64) { self.before = before; self.startBatch = startBatch }
        func finish(_ r: Result<Void, StorageError>) { condition.withLock { result = r; condition.broadcast() } }
        /// The outcome, once the copy is done.
        var outcome: Result<Void, StorageError>? { condition.withLock { result } }
        func wait() { condition.withLock { while result == nil { condition.wait() } } }
    }
    /// Writer-only.
    private var copyJob: CopyJob?
    /// For tests: runs on the copying thread once the copy is written, before it is done.
    var afterCompactedCopy: (@Sendable () -> Void)?
    /// While a copy is written: the redo log keeps every batch after this one (read and
    /// set under `checkpointLock`), so that the batches committed during the copy can be
    /// applied to it, and found again after a crash.
    private var keepLogAfter: UInt64?

    /// Whether a compacted copy is being written or waits to be put in place (writer-only).
    var compactionUnderWay: Bool { copyJob != nil }

    /// Compacting while the store runs, first half: when LMDB's file is worth it (at least
    /// `policy.minFileBytes`, with at most `policy.maxLiveShare` and `policy.maxLiveBytes`
    /// live and at least `policy.minFreeBytes` free), starts writing the compacted copy of
    /// the latest snapshot on a thread of its own and says true; changes go on meanwhile.
    /// `copied` runs on that thread when the copy is done: then ``finishCompaction()``
    /// puts it in place. Writer-only, between batches.
    func startCompaction(policy: Compaction, copied: @escaping @Sendable () -> Void) -> Bool {
        guard copyJob == nil, checkpointFailure == nil else { return false }
        var st = stat()
        guard stat(directory + "/data.mdb", &st) == 0, Int(st.st_size) >= policy.minFileBytes,
              Self.worthCompacting(env, fileBytes: Int(st.st_size), policy: policy) else { return false }
        let job = CopyJob(before: Int(st.st_size), startBatch: batchNumber)
        checkpointLock.withLock { keepLogAfter = job.startBatch }
        copyJob = job
        let (env, copy, afterCopy) = (env, directory + "/" + Self.compactName, afterCompactedCopy)
        let thread = Thread {
            do throws(StorageError) {
                try env.writeCompactCopy(to: copy)
                afterCopy?()
                job.finish(.success(()))
            } catch {
                unlink(copy)
                job.finish(.failure(error))
            }
            copied()
        }
        thread.start()
        return true
    }

    /// Compacting while the store runs, second half, once the copy is written: the copy
    /// takes the place of LMDB's file and the batches committed while it was written are
    /// applied to it again from the redo log. Returns the file's sizes before and after
    /// and how many batches were applied again, or nil when there is nothing to put in
    /// place (no copy, or not done yet, or it failed: then it is dropped). Writer-only,
    /// between batches; changes wait only for the swap, not for the copy.
    ///
    /// The order keeps a directory that opens whole after a crash at any step: the copy
    /// is flushed (by its thread); LMDB's file is flushed (it opens whole without a
    /// checkpoint); the `checkpoint` file goes; the copy is renamed in place and opened;
    /// the tables open again; the copy's snapshot is checkpointed (the log still holds
    /// every batch after it); the batches after it are applied. An error once the
    /// `checkpoint` file is gone leaves a store that must be opened again.
    func finishCompaction() throws(StorageError) -> (before: Int, after: Int, replayed: Int)? {
        guard let job = copyJob, let outcome = job.outcome else { return nil }
        copyJob = nil
        let path = directory + "/data.mdb"
        let copy = directory + "/" + Self.compactName
        checkpointLock.lock()
        var locked = true
        defer { if locked { checkpointLock.unlock() } }
        keepLogAfter = nil
        guard case .success = outcome, checkpointFailure == nil else {
            unlink(copy)
            return nil
        }
        // The batch the copy holds, and every one after it, from the log.
        let copied: UInt64
        let later: [LoggedBatch]
        do throws(StorageError) {
            guard let stored = try LMDBEnvironment.value(inFile: copy, table: "meta", key: Self.walBatchKey) else {
                throw StorageError(.corrupt, "the compacted copy has no batch number")
            }
            copied = UInt64(bigEndianBytes: stored)
            later = try log.batches(after: copied)
            guard copied >= job.startBatch, copied + UInt64(later.count) == batchNumber else {
                throw StorageError(.corrupt, "the redo log does not hold every batch after the copy's (\(copied)) up to \(batchNumber)")
            }
        } catch {
            unlink(copy)
            return nil
        }
        do throws(StorageError) {
            try env.sync()
        } catch {
            unlink(copy)
            failureLock.withLock { persistFailure = persistFailure ?? error }
            throw error
        }
        do throws(StorageError) {
            guard CheckpointFile.remove(in: directory) else {
                throw StorageError(.io, "cannot remove \(directory)/\(CheckpointFile.name): \(String(cString: strerror(errno)))")
            }
            // Readers wait until the copy is caught up: the file's state must not go back
            // from the last batch to the copy's and forward again under their eyes (a
            // broker reading the ready tasks would hand out tasks already acked).
            try env.replaceFile(with: copy) { () throws(StorageError) in
                guard try StoreTables(env: env) == t else {
                    throw StorageError(.corrupt, "the compacted store's tables did not open as before")
                }
                generation += 1
                // The bounds stored in the copy are older than those the writer raised
                // since: the batches applied again must raise them in the new file too.
                try env.writerRead { (txn) throws(StorageError) in
                    idLimit = try metaNumber("next_id", txn) ?? 1
                    seqLimit = try metaNumber("next_seq", txn) ?? 1
                }
                try checkpoints.reopen()
                let txnid = try env.pinLatestSnapshot()
                guard let page = try env.metaPage(for: txnid) else {
                    throw StorageError(.corrupt, "the meta page of transaction \(txnid) is not in the compacted file")
                }
                try checkpoints.write(Checkpoint(txnid: txnid, batch: copied, metaPage: page, generation: generation))
                log.dataFlushed(through: copied)
                // Applying a batch may take a checkpoint (when the map is full), which
                // takes the checkpoint lock.
                checkpointLock.unlock()
                locked = false
                try applyAgain(later)
            }
        } catch {
            failureLock.withLock { persistFailure = persistFailure ?? error }
            throw error
        }
        var st = stat()
        guard stat(path, &st) == 0 else { return (job.before, 0, later.count) }
        return (job.before, Int(st.st_size), later.count)
    }

    /// Applies logged batches again, as they ran the first time (their clock, ids and
    /// counters), all in one write transaction that ends with the last one's number;
    /// the writer's counters end where they were, or past.
    ///
    /// One transaction, not one a batch: the batches a compaction catches up with are
    /// applied while changes wait, and each commit would copy the pages it touches to
    /// fresh ones (the copy's snapshot is pinned until the next checkpoint), growing the
    /// newly compacted file by ~10 pages a batch.
    private func applyAgain(_ batches: [LoggedBatch]) throws(StorageError) {
        guard let last = batches.last else { return }
        let (startID, startSeq, deliveries) = (nextID, nextSeq, maxDeliveries)
        var checkpointed = false
        var ballastReleased = false
        while true {
            var current: UInt64 = 0
            do throws(StorageError) {
                try env.withWriteTransaction { (txn) throws(StorageError) in
                    beginTransaction()
                    for batch in batches {
                        current = batch.number
                        nextID = batch.nextID
                        nextSeq = batch.nextSeq
                        maxDeliveries = batch.maxDeliveries
                        for op in batch.ops { _ = try apply(op, now: batch.now, txn) }
                    }
                    try saveQueueCounts(txn)
                    try saveCounters(txn)
                    try txn.put(t.meta, Self.walBatchKey, last.number.bigEndianBytes)
                }
                break
            } catch where error.code == .notFound {
                throw StorageError(.corrupt, "batch \(current) of the redo log does not apply again: \(error.message)")
            } catch where error.code == .diskFull || (error.code == .io && Self.hasNoRoom(ballastPath)) {
                // The disk is full: the ballast's room is for this (LMDB reports a write
                // cut short by a full disk as EIO: ask the filesystem).
                guard !ballastReleased, unlink(ballastPath) == 0 || errno == ENOENT else { throw error }
                ballastReleased = true
                diskFullRetryAt = currentMillis() + 1000
            } catch where error.code == .storageFull {
                // A logged batch was accepted once: it may grow the map into the reserve.
                if try env.grow(limit: env.maxMapSize + env.reserve) { continue }
                // Pages freed since the last checkpoint are kept until the next: take one
                // now, and they are free for these batches.
                guard !checkpointed else { throw error }
                checkpointed = true
                try checkpoint()
            }
        }
        countersCommitted()
        batchNumber = last.number
        committedLock.lock()
        committed = batchNumber
        committedLock.unlock()
        // Ids and seqs past the stored bounds may have gone to batches the log lost.
        nextID = max(nextID, startID)
        nextSeq = max(nextSeq, startSeq)
        maxDeliveries = deliveries
    }

    /// Waits for a copy under way and drops it (at close).
    func abandonCompaction() {
        guard let job = copyJob else { return }
        job.wait()
        copyJob = nil
        unlink(directory + "/" + Self.compactName)
        checkpointLock.withLock { keepLogAfter = nil }
    }

    /// When a file of `fileBytes` is worth compacting under `policy` (see ``worthCompacting(_:fileBytes:policy:)``),
    /// writes the compacted copy to `copy` and says true; false when it is not worth it
    /// or the copy failed (then no copy is left).
    private static func writeCompactCopyIfMostlyFree(_ env: LMDBEnvironment, fileBytes: Int, policy: Compaction, to copy: String) -> Bool {
        guard worthCompacting(env, fileBytes: fileBytes, policy: policy) else { return false }
        do throws(StorageError) {
            try env.writeCompactCopy(to: copy)
            return true
        } catch {
            unlink(copy)
            return false
        }
    }

    /// Whether `policy` allows compacting a file of `fileBytes` with what is live in `env`
    /// (LMDB's used pages less its free list).
    private static func worthCompacting(_ env: LMDBEnvironment, fileBytes: Int, policy: Compaction) -> Bool {
        guard let free = try? env.freeBytes() else { return false }
        return policy.allows(liveBytes: env.usedBytes - free, fileBytes: fileBytes)
    }

    /// The number of the last batch committed, for the background flush of LMDB's file.
    var committedBatch: UInt64 { committedLock.lock(); defer { committedLock.unlock() }; return committed }

    /// Applies again the logged batches LMDB's file does not have (after a crash, or a
    /// power loss that lost LMDB's unflushed pages), flushes, and starts the log afresh.
    /// Returns how many batches it applied. Run once at open, before anything else.
    func replayLog() throws(StorageError) -> Int {
        let batches = try log.batches(after: batchNumber)
        try applyAgain(batches)
        try checkpoint()
        try log.restart(through: batchNumber)
        return batches.count
    }

    /// Pins the latest committed snapshot and notes its meta page and batch: the first
    /// half of a checkpoint, taken between write transactions (by the writer).
    func takeSnapshot() throws(StorageError) -> Checkpoint {
        let txnid = try env.pinLatestSnapshot()
        guard let page = try env.metaPage(for: txnid) else {
            throw StorageError(.corrupt, "the meta page of transaction \(txnid) is not in the store's file")
        }
        return Checkpoint(txnid: txnid, batch: batchNumber, metaPage: page, generation: generation)
    }

    /// How many times the file was compacted while the store ran (writer-only; read under
    /// `checkpointLock` by ``persist(_:)``).
    private(set) var generation = 0

    /// Flushes LMDB's file, and records `snapshot` (now wholly on disk) as the one to
    /// start from: older snapshots' pages may be reused from here on, and the redo log
    /// may drop the batches `snapshot` holds. Any thread; one at a time.
    func persist(_ snapshot: Checkpoint) throws(StorageError) {
        checkpointLock.lock()
        defer { checkpointLock.unlock() }
        // After a failed flush, pages it could not write may count as written: a later
        // flush that succeeds would not make the file whole (TaskStore.haltedBy).
        if let failure = checkpointFailure { throw failure }
        // Taken before a compaction replaced the file: the compaction checkpointed the new one.
        guard snapshot.generation == generation else { return }
        do throws(StorageError) {
            try env.sync()
            try checkpoints.write(snapshot)
        } catch {
            failureLock.withLock { persistFailure = persistFailure ?? error }
            throw error
        }
        env.releasePins(before: snapshot.txnid)
        log.dataFlushed(through: min(snapshot.batch, keepLogAfter ?? .max))
    }

    /// The error of the first checkpoint that failed to flush, if one did; every later
    /// checkpoint fails with it. (Its own lock: the writer asks after every batch, while a
    /// checkpoint holds `checkpointLock` for the length of a flush.)
    var checkpointFailure: StorageError? { failureLock.withLock { persistFailure } }
    private var persistFailure: StorageError?
    private let failureLock = NSLock()

    /// A whole checkpoint, when nothing else writes (at open and close).
    func checkpoint() throws(StorageError) {
        try persist(try takeSnapshot())
    }

    private var lockReleased = false
    /// A file of free room kept in the data directory: when the disk fills up it is
    /// removed, so that acks and deletes (which need a few fresh pages) still commit.
    private let ballastPath: String
    private let ballastBytes: Int
    /// While the disk is full: when the ballast was last tried again.
    private var diskFullRetryAt: Millis?

    deinit {
        shutDown()
    }

    /// Closes the environment and releases the data directory. Writer-side: call after
    /// the last write.
    func shutDown() {
        abandonCompaction()
        env.close()
        if !lockReleased {
            lockReleased = true
            close(lockFD)
        }
    }

    /// Creates (or completes) the ballast file; false when the disk has no room for it.
    static func allocateBallast(_ path: String, _ bytes: Int) -> Bool {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o640)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        if posix_fallocate(fd, 0, off_t(bytes)) != 0 {
            _ = ftruncate(fd, 0)
            return false
        }
        return fsync(fd) == 0
    }

    /// Whether the filesystem holding `path` has (almost) no room left.
    static func hasNoRoom(_ path: String) -> Bool {
        var st = statvfs()
        let dir = String(path[..<(path.lastIndex(of: "/") ?? path.endIndex)])
        guard statvfs(dir.isEmpty ? "." : dir, &st) == 0 else { return false }
        return Int(st.f_bavail) * Int(st.f_frsize) < 1 << 20
    }

    /// Whether only changes that add nothing may run because the disk is full; tries to
    /// take the room back now and then.
    private func diskStillFull(now: Millis) -> Bool {
        guard let retry = diskFullRetryAt else { return false }
        if now < retry { return true }
        if Self.allocateBallast(ballastPath, ballastBytes) {
            diskFullRetryAt = nil
            return false
        }
        diskFullRetryAt = now + 1000
        return true
    }

    private func metaNumber(_ name: String, _ txn: borrowing LMDBTransaction) throws(StorageError) -> UInt64? {
        try txn.get(t.meta, Array(name.utf8)).map { UInt64(bigEndianBytes: $0) }
    }

    /// Raises the stored bounds, in the same transaction, past every id and seq it used.
    private func saveCounters(_ txn: borrowing LMDBTransaction) throws(StorageError) {
        pendingLimits = nil
        guard nextID > idLimit || nextSeq > seqLimit else { return }
        let limits = (max(idLimit, nextID + Self.reservation), max(seqLimit, nextSeq + Self.reservation))
        try txn.put(t.meta, Array("next_id".utf8), limits.0.bigEndianBytes)
        try txn.put(t.meta, Array("next_seq".utf8), limits.1.bigEndianBytes)
        pendingLimits = limits
    }

    /// The transaction that raised the bounds committed: they hold from now on.
    private func countersCommitted() {
        if let (i, s) = pendingLimits { idLimit = i; seqLimit = s }
        pendingLimits = nil
    }

    // MARK: Letting go of LMDB's page copies

    /// A batch that replays, deletes or prunes at least this many failures has the
    /// environment opened again once a checkpoint holds it (see ``reopenEnvironment()``):
    /// each such failure leaves about 7 KiB of page copies behind (a `REPLAY` of 30,000
    /// failures among 300,000 took the process from 31 to 251 MiB of anonymous memory).
    var failuresBeforeReopen = 2000

    /// The number of a batch whose page copies should be let go of, once a checkpoint
    /// holds it (set by the writer; read by the checkpointing thread).
    var reopenAfterBatch: UInt64? { committedLock.withLock { wantsReopenAfter } }
    private var wantsReopenAfter: UInt64?
    /// Failures replayed, deleted or pruned by the batch being applied (writer-only).
    private var failuresRemoved = 0

    /// Closes LMDB's environment and opens it again, between two batches: LMDB keeps the
    /// memory of every page a write transaction changed for the transactions after it,
    /// and only closing the environment frees it, so one big `REPLAY` would otherwise
    /// hold hundreds of MiB for good. Everything committed is flushed first and the
    /// latest snapshot becomes the checkpoint (a snapshot taken before for a checkpoint
    /// still under way is of the environment closed: ``persist(_:)`` drops it). Not while
    /// a compaction copies the file (it reads the environment). Writer-only; an error once
    /// the environment is closed leaves a store that must be opened again.
    /// Returns false if it did not (a compaction was under way).
    func reopenEnvironment() throws(StorageError) -> Bool {
        // Asked again after the next checkpoint: by then the copy may be in place.
        guard !compactionUnderWay else { return false }
        committedLock.withLock { wantsReopenAfter = nil }
        checkpointLock.lock()
        defer { checkpointLock.unlock() }
        if let failure = checkpointFailure { throw failure }
        do throws(StorageError) {
            try env.sync()
            try env.reopen { () throws(StorageError) in
                guard try StoreTables(env: env) == t else {
                    throw StorageError(.corrupt, "the store's tables did not open as before")
                }
                generation += 1
                try checkpoints.write(try takeSnapshot())
            }
        } catch {
            failureLock.withLock { persistFailure = persistFailure ?? error }
            throw error
        }
        log.dataFlushed(through: batchNumber)
        // The pages went back to the C heap, which keeps freed memory for later
        // allocations: hand what it can spare back to the system.
        trimHeap()
        return true
    }

    // MARK: Batches

    /// Applies `ops` in one write transaction, in order, and commits it (without sync).
    /// An operation that fails on its own (say, an unknown id) fails alone; a failing
    /// commit fails them all. When the map is full it grows and the batch runs again;
    /// at the ceiling, operations that add data fail with `storageFull` and the rest run.
    ///
    /// Every batch that changes something gets the next batch number, stored in the same
    /// transaction, and its record is written to the redo log before it commits.
    /// (``applyAgain(_:)`` applies logged batches again.)
    func apply(_ ops: [StoreOperation]) -> [Result<StoreOutcome, StorageError>] {
        repairedByLastBatch = []
        // Past the ceiling (in the reserve), only changes that add nothing run.
        var full = diskStillFull(now: currentMillis())
        if !full && env.mapSize > env.maxMapSize {
            let free = (try? env.freeBytes()) ?? 0
            full = env.usedBytes - free >= env.maxMapSize - env.reserve / 4
        }
        var checkpointed = false
        while true {
            let now = currentMillis()
            let (startID, startSeq) = (nextID, nextSeq)
            var results: [Result<StoreOutcome, StorageError>] = []
            results.reserveCapacity(ops.count)
            var logged: [StoreOperation] = []
            var appended: Int?
            do throws(StorageError) {
                try env.withWriteTransaction { (txn) throws(StorageError) in
                    beginTransaction()
                    for op in ops {
                        if full && op.adds {
                            results.append(.failure(diskFullRetryAt != nil
                                ? StorageError(.diskFull, "storage full: no space left on the device; the change was not applied")
                                : StorageError(.storageFull, "storage full: the store reached its maximum size (\(env.maxMapSize >> 20) MiB); the change was not applied")))
                            continue
                        }
                        do throws(StorageError) {
                            results.append(.success(try apply(op, now: now, txn)))
                            logged.append(op)
                        } catch where error.code == .notFound {
                            results.append(.failure(error))
                        }
                    }
                    try saveQueueCounts(txn)
                    try saveCounters(txn)
                    guard !logged.isEmpty else { return }
                    let number = batchNumber + 1
                    try txn.put(t.meta, Self.walBatchKey, number.bigEndianBytes)
                    appended = try log.append(LoggedBatch(number: number, now: now, nextID: startID, nextSeq: startSeq,
                                                          maxDeliveries: maxDeliveries, ops: logged))
                }
                countersCommitted()
                countsRepaired += recountQueues.count
                repairedByLastBatch = recountQueues.sorted()
                if !logged.isEmpty {
                    batchNumber += 1
                    committedLock.lock()
                    committed = batchNumber
                    if failuresRemoved >= failuresBeforeReopen { wantsReopenAfter = batchNumber }
                    committedLock.unlock()
                }
                // Keep the map at least twice what the file uses: a batch that overflows
                // it (a `REPLAY` of many failures, say) is undone and applied again once
                // the map has grown, doing all its work twice while every other change
                // waits. (The map is address space: the file grows only as pages are used.)
                // Not while anyone reads: a growth waits for every read transaction (a
                // long search, a compaction's copy), and changes would wait with it.
                if !full && env.mapSize < env.maxMapSize && env.usedBytes > env.mapSize / 2 {
                    _ = try? env.growIfNobodyReads()
                }
                return results
            } catch where error.code == .diskFull || (error.code == .io && Self.hasNoRoom(ballastPath)) {
                if let appended { retract(appended) }
                // LMDB reports a write cut short by a full disk as EIO: ask the filesystem.
                // Give up the ballast's room to the changes that free space, and refuse
                // the ones that add data until the disk has room again.
                guard !full, unlink(ballastPath) == 0 || errno == ENOENT else {
                    return ops.map { _ in .failure(error) }
                }
                full = true
                diskFullRetryAt = currentMillis() + 1000
            } catch where error.code == .storageFull {
                if let appended { retract(appended) }
                do throws(StorageError) {
                    let limit = full ? env.maxMapSize + env.reserve : env.maxMapSize
                    if try !env.grow(limit: limit) {
                        // Pages freed since the last checkpoint are kept until the next:
                        // take one now, and they are free for this batch.
                        if !checkpointed {
                            checkpointed = true
                            try checkpoint()
                            continue
                        }
                        if !full { full = true } else { return ops.map { _ in .failure(error) } }
                    }
                } catch {
                    return ops.map { _ in .failure(error) }
                }
            } catch {
                if let appended { retract(appended) }
                return ops.map { _ in .failure(error) }
            }
        }
    }

    /// Takes back the record of a batch that did not commit, and flushes the taken-back
    /// record before the batch's callers hear that it failed: a flush for earlier
    /// batches, running meanwhile on the flusher thread, may have put it on disk whole,
    /// and after a power cut it would be applied again.
    private func retract(_ file: Int) {
        log.retract()
        do throws(StorageError) {
            try log.flush(file: file)
        } catch {
            retractionFailure = retractionFailure ?? error
        }
    }

    private func apply(_ op: StoreOperation, now: Millis, _ txn: borrowing LMDBTransaction) throws(StorageError) -> StoreOutcome {
        switch op {
        case let .put(queue, payload):
            let id = nextID
            nextID += 1
            let seq = nextSeq
            nextSeq += 1
            let rec = TaskRecord(state: .ready, deliveries: 0, replays: 0, seq: seq, readyAt: 0, queue: queue, payload: payload)
            try txn.put(t.tasks, StoreTables.taskKey(id), rec.encoded())
            try txn.put(t.ready, StoreTables.readyKey(queue, seq), id.bigEndianBytes)
            try adjust(queue, txn) { $0.ready += 1 }
            return .put(id)
        case let .take(queue):
            return .taken(try take(queue, txn))
        case let .claim(id):
            guard let bytes = try txn.get(t.tasks, StoreTables.taskKey(id)) else {
                throw StorageError(.notFound, "task \(id) is not ready")
            }
            var rec = try TaskRecord(decoding: bytes)
            guard rec.state == .ready else { throw StorageError(.notFound, "task \(id) is not ready") }
            try txn.delete(t.ready, StoreTables.readyKey(rec.queue, rec.seq))
            rec.state = .inflight
            rec.deliveries += 1
            try txn.put(t.tasks, StoreTables.taskKey(id), rec.encoded())
            try txn.put(t.inflight, StoreTables.taskKey(id), [])
            try adjust(rec.queue, txn) { $0.ready -= 1; $0.inflight += 1 }
            return .claimed
        case let .ack(id):
            let rec = try inflight(id, txn)
            try txn.delete(t.inflight, StoreTables.taskKey(id))
            try txn.delete(t.tasks, StoreTables.taskKey(id))
            try adjust(rec.queue, txn) { $0.inflight -= 1 }
            return .acked
        case let .nack(id, error):
            let rec = try inflight(id, txn)
            try txn.delete(t.inflight, StoreTables.taskKey(id))
            try fail(id, rec, error: error, now: now, txn)
            try adjust(rec.queue, txn) { $0.inflight -= 1; $0.failed += 1 }
            return .failed(queue: rec.queue)
        case let .requeue(id, readyAt):
            return .returned(try giveBack(id, readyAt: readyAt, now: now, txn))
        case let .release(id):
            return .returned(try giveBack(id, readyAt: nil, now: now, txn))
        case .promoteDue:
            return .promoted(try promote(now: now, txn))
        case let .replay(query):
            var perQueue: [String: Int] = [:]
            // Oldest failure first (the index gives newest first): replayed tasks queue up
            // in the order they failed, as they once queued in the order they were put.
            let ids = try index.ids(query, txn)
            // In slices, so that the records held at once stay few however many match.
            for slice in Self.slices(of: ids.reversed(), size: failuresPerSlice) {
                let failures = try removeFailed(slice, txn)
                // Each table written in its keys' order (see ``LMDBCursor/put(_:_:)``).
                var tasks: [(id: TaskID, record: [UInt8])] = []
                var ready: [(key: [UInt8], id: TaskID)] = []
                tasks.reserveCapacity(failures.count)
                ready.reserveCapacity(failures.count)
                for f in failures {
                    let seq = nextSeq
                    nextSeq += 1
                    let rec = TaskRecord(state: .ready, deliveries: 0, replays: UInt32(clamping: f.replays + 1), seq: seq, readyAt: 0, queue: f.queue, payload: f.payload)
                    tasks.append((f.id, rec.encoded()))
                    ready.append((StoreTables.readyKey(f.queue, seq), f.id))
                    perQueue[f.queue, default: 0] += 1
                }
                tasks.sort { $0.id < $1.id }
                ready.sort { $0.key.lexicographicallyPrecedes($1.key) }
                try txn.withCursor(t.tasks) { (c) throws(StorageError) in
                    for (id, record) in tasks { try c.put(StoreTables.taskKey(id), record) }
                }
                try txn.withCursor(t.ready) { (c) throws(StorageError) in
                    for (key, id) in ready { try c.put(key, id.bigEndianBytes) }
                }
            }
            for (q, n) in perQueue { try adjust(q, txn) { $0.failed -= n; $0.ready += n } }
            failuresRemoved += ids.count
            return .replayed(perQueue)
        case let .delete(query):
            let n = try removeFailures(index.ids(query, txn), txn)
            return .deleted(n)
        case let .prune(olderThan, limit):
            var ids: [TaskID] = []
            try txn.withCursor(t.byTime) { (c) throws(StorageError) in
                var e = try c.last()
                while let entry = e, ids.count < limit {
                    let (at, id) = StoreTables.decodePosting(entry.key)
                    if at >= olderThan { break }
                    ids.append(id)
                    e = try c.previous()
                }
            }
            let n = try removeFailures(ids, txn)
            if n > 0 {
                let pruned = try metaNumber("pruned", txn) ?? 0
                try txn.put(t.meta, Array("pruned".utf8), (pruned + UInt64(n)).bigEndianBytes)
            }
            return .pruned(n)
        }
    }

    private func removeFailures(_ ids: [TaskID], _ txn: borrowing LMDBTransaction) throws(StorageError) -> Int {
        var perQueue: [String: Int] = [:]
        for slice in Self.slices(of: ids, size: failuresPerSlice) {
            for f in try removeFailed(slice, txn) { perQueue[f.queue, default: 0] += 1 }
        }
        for (q, n) in perQueue { try adjust(q, txn) { $0.failed -= n } }
        failuresRemoved += ids.count
        return perQueue.values.reduce(0, +)
    }

    /// Loads the failures of `slice` (those still there) and removes them and their index
    /// entries; returns them, in the slice's order.
    private func removeFailed(_ slice: ArraySlice<TaskID>, _ txn: borrowing LMDBTransaction) throws(StorageError) -> [FailedTask] {
        var failures: [FailedTask] = []
        failures.reserveCapacity(slice.count)
        for id in slice { if let f = try index.load(id, txn) { failures.append(f) } }
        try index.remove(all: failures, txn)
        return failures
    }

    /// `ids` in slices of at most `size` (at least one), in their order.
    static func slices<C: Collection>(of ids: C, size: Int) -> [ArraySlice<TaskID>] where C.Element == TaskID {
        let all = Array(ids)
        let size = max(1, size)
        return stride(from: 0, to: all.count, by: size).map { all[$0..<min($0 + size, all.count)] }
    }

    private func take(_ queue: String, _ txn: borrowing LMDBTransaction) throws(StorageError) -> DeliveredTask? {
        let prefix = StoreTables.queuePrefix(queue)
        let id: TaskID? = try txn.withCursor(t.ready) { (c) throws(StorageError) -> TaskID? in
            guard let e = try c.seek(atOrAfter: prefix), e.key.starts(with: prefix) else { return nil }
            try c.deleteCurrent()
            return UInt64(bigEndianBytes: e.value)
        }
        guard let id else { return nil }
        guard let bytes = try txn.get(t.tasks, StoreTables.taskKey(id)) else {
            throw StorageError(.corrupt, "ready task \(id) has no record")
        }
        var rec = try TaskRecord(decoding: bytes)
        rec.state = .inflight
        rec.deliveries += 1
        try txn.put(t.tasks, StoreTables.taskKey(id), rec.encoded())
        try txn.put(t.inflight, StoreTables.taskKey(id), [])
        try adjust(queue, txn) { $0.ready -= 1; $0.inflight += 1 }
        return DeliveredTask(id: id, queue: queue, payload: rec.payload, delivery: Int(rec.deliveries))
    }

    private func inflight(_ id: TaskID, _ txn: borrowing LMDBTransaction) throws(StorageError) -> TaskRecord {
        guard let bytes = try txn.get(t.tasks, StoreTables.taskKey(id)) else {
            throw StorageError(.notFound, "task \(id) is not in flight")
        }
        let rec = try TaskRecord(decoding: bytes)
        guard rec.state == .inflight else { throw StorageError(.notFound, "task \(id) is not in flight") }
        return rec
    }

    private func fail(_ id: TaskID, _ rec: TaskRecord, error: String, now: Millis, _ txn: borrowing LMDBTransaction) throws(StorageError) {
        try txn.delete(t.tasks, StoreTables.taskKey(id))
        let f = FailedTask(id: id, queue: rec.queue, error: error, group: ErrorFingerprint.group(of: error),
                           deliveries: Int(rec.deliveries), replays: Int(rec.replays), failedAt: now, payload: rec.payload)
        try index.add(f, txn)
    }

    /// Returns an in-flight task: to the front of its queue, to the delayed set, or, past
    /// the delivery limit, to the failed store.
    private func giveBack(_ id: TaskID, readyAt: Millis?, now: Millis, _ txn: borrowing LMDBTransaction) throws(StorageError) -> ReturnedTo {
        var rec = try inflight(id, txn)
        try txn.delete(t.inflight, StoreTables.taskKey(id))
        if maxDeliveries > 0 && rec.deliveries >= maxDeliveries {
            try fail(id, rec, error: "delivery limit exceeded (\(rec.deliveries) deliveries)", now: now, txn)
            try adjust(rec.queue, txn) { $0.inflight -= 1; $0.failed += 1 }
            return .failed(queue: rec.queue)
        }
        if let readyAt, readyAt > now {
            rec.state = .delayed
            rec.readyAt = readyAt
            try txn.put(t.tasks, StoreTables.taskKey(id), rec.encoded())
            try txn.put(t.delayed, StoreTables.delayedKey(readyAt, id), [])
            try adjust(rec.queue, txn) { $0.inflight -= 1; $0.delayed += 1 }
            return .delayed(queue: rec.queue)
        }
        rec.state = .ready
        try txn.put(t.tasks, StoreTables.taskKey(id), rec.encoded())
        try txn.put(t.ready, StoreTables.readyKey(rec.queue, rec.seq), id.bigEndianBytes)
        try adjust(rec.queue, txn) { $0.inflight -= 1; $0.ready += 1 }
        return .ready(queue: rec.queue)
    }

    private func promote(now: Millis, _ txn: borrowing LMDBTransaction) throws(StorageError) -> [String: Int] {
        var due: [TaskID] = []
        try txn.withCursor(t.delayed) { (c) throws(StorageError) in
            var e = try c.first()
            while let entry = e, due.count < 10_000 {
                var r = ByteReader(entry.key)
                let at = try r.i64()
                if at > now { break }
                due.append(try r.u64())
                try c.deleteCurrent()
                e = try c.first()
            }
        }
        var perQueue: [String: Int] = [:]
        for id in due {
            guard let bytes = try txn.get(t.tasks, StoreTables.taskKey(id)) else { continue }
            var rec = try TaskRecord(decoding: bytes)
            rec.state = .ready
            rec.readyAt = 0
            try txn.put(t.tasks, StoreTables.taskKey(id), rec.encoded())
            try txn.put(t.ready, StoreTables.readyKey(rec.queue, rec.seq), id.bigEndianBytes)
            perQueue[rec.queue, default: 0] += 1
        }
        for (q, n) in perQueue { try adjust(q, txn) { $0.delayed -= n; $0.ready += n } }
        return perQueue
    }

    /// Empties what a write transaction of batches gathers as it goes (the counts it
    /// changed, the queues to count again, the failures it removed). At the start of each
    /// attempt, not after the save: an attempt that failed (the map was full) starts again
    /// from what LMDB holds.
    private func beginTransaction() {
        batchCounts.removeAll(keepingCapacity: true)
        recountQueues.removeAll()
        failuresRemoved = 0
    }

    /// Changes a queue's counts in this batch's copy; ``saveQueueCounts(_:)`` writes them
    /// once before the batch commits. (Reading, decoding and writing them back for every
    /// operation was a quarter of an operation's work.)
    private func adjust(_ queue: String, _ txn: borrowing LMDBTransaction, _ change: (inout QueueCounts) -> Void) throws(StorageError) {
        if batchCounts[queue] == nil {
            do throws(StorageError) {
                batchCounts[queue] = try txn.get(t.queues, Array(queue.utf8)).map { (b) throws(StorageError) in try QueueCounts(decoding: b) } ?? QueueCounts()
            } catch where error.code == .corrupt {
                // A damaged record must not fail the batch (and every change in it, on
                // any queue): the queue is counted from the tables before the save.
                recountQueues.insert(queue)
                batchCounts[queue] = QueueCounts()
            }
        }
        change(&batchCounts[queue]!)
    }

    /// A queue's counts as its tables have them: its ready entries, its failures, and the
    /// in-flight and delayed tasks whose records name it (those tables are read whole).
    /// For a damaged count record; slow on a big store.
    private func countFromTables(_ queue: String, _ txn: borrowing LMDBTransaction) throws(StorageError) -> QueueCounts {
        var counts = QueueCounts()
        let prefix = StoreTables.queuePrefix(queue)
        try txn.withCursor(t.ready) { (c) throws(StorageError) in
            try c.walk(from: prefix) { (key, _) throws(StorageError) in
                guard key.starts(with: prefix) else { return false }
                counts.ready += 1
                return true
            }
        }
        counts.failed = try txn.withCursor(t.byQueue) { (c) throws(StorageError) -> Int in
            guard try c.seek(key: Array(queue.utf8)) != nil else { return 0 }
            return try c.duplicateCount()
        }
        func isOfQueue(_ id: TaskID) throws(StorageError) -> Bool {
            guard let bytes = try txn.get(t.tasks, StoreTables.taskKey(id)) else { return false }
            return try TaskRecord(decoding: bytes).queue == queue
        }
        var ids: [TaskID] = []
        // (From the least key of one byte: LMDB takes no empty key.)
        try txn.withCursor(t.inflight) { (c) throws(StorageError) in
            try c.walk(from: [0]) { (key, _) throws(StorageError) in
                ids.append(UInt64(bigEndianBytes: Array(key)))
                return true
            }
        }
        for id in ids where try isOfQueue(id) { counts.inflight += 1 }
        ids.removeAll()
        try txn.withCursor(t.delayed) { (c) throws(StorageError) in
            try c.walk(from: [0]) { (key, _) throws(StorageError) in
                var r = ByteReader(Array(key))
                _ = try r.i64()
                ids.append(try r.u64())
                return true
            }
        }
        for id in ids where try isOfQueue(id) { counts.delayed += 1 }
        return counts
    }

    /// Writes the counts this batch changed (a queue with nothing left loses its record).
    private func saveQueueCounts(_ txn: borrowing LMDBTransaction) throws(StorageError) {
        for queue in recountQueues { batchCounts[queue] = try countFromTables(queue, txn) }
        for (queue, counts) in batchCounts {
            let key = Array(queue.utf8)
            if counts.isEmpty { try txn.delete(t.queues, key) } else { try txn.put(t.queues, key, counts.encoded()) }
        }
    }

    // MARK: Recovery

    /// Returns every in-flight task to the front of its queue (or, past the delivery
    /// limit, to the failed store). Run once at open, before anything else.
    func recover() throws(StorageError) -> Int {
        let ids: [TaskID] = try env.withReadTransaction { (txn) throws(StorageError) in
            var ids: [TaskID] = []
            try txn.withCursor(t.inflight) { (c) throws(StorageError) in
                var e = try c.first()
                while let entry = e { ids.append(UInt64(bigEndianBytes: entry.key)); e = try c.next() }
            }
            return ids
        }
        guard !ids.isEmpty else { return 0 }
        for chunk in stride(from: 0, to: ids.count, by: 10_000) {
            let ops = ids[chunk..<min(ids.count, chunk + 10_000)].map { StoreOperation.release($0) }
            for r in apply(ops) { if case .failure(let e) = r, e.code != .notFound { throw e } }
        }
        try checkpoint()
        return ids.count
    }

    // MARK: Reads

    func read<R>(_ body: (borrowing LMDBTransaction) throws(StorageError) -> R) throws(StorageError) -> R {
        try env.withReadTransaction(body)
    }

    func counts() throws(StorageError) -> [String: QueueCounts] {
        try read { (txn) throws(StorageError) in
            var out: [String: QueueCounts] = [:]
            var damaged: [String] = []
            try txn.withCursor(t.queues) { (c) throws(StorageError) in
                var e = try c.first()
                while let entry = e {
                    let queue = String(decoding: entry.key, as: UTF8.self)
                    do throws(StorageError) {
                        out[queue] = try QueueCounts(decoding: entry.value)
                    } catch where error.code == .corrupt {
                        out[queue] = nil
                        damaged.append(queue)
                    }
                    e = try c.next()
                }
            }
            // A damaged record (the next change to its queue writes it anew): counted
            // from the tables, so that `STATS` still answers, and right.
            for queue in damaged { out[queue] = try countFromTables(queue, txn) }
            return out
        }
    }

    func pruned() throws(StorageError) -> Int {
        try read { (txn) throws(StorageError) in Int(clamping: try metaNumber("pruned", txn) ?? 0) }
    }

    func peekReady(_ queue: String, skipping: Set<TaskID>) throws(StorageError) -> DeliveredTask? {
        try read { (txn) throws(StorageError) -> DeliveredTask? in
            let prefix = StoreTables.queuePrefix(queue)
            return try txn.withCursor(t.ready) { (c) throws(StorageError) -> DeliveredTask? in
                // The tasks being claimed are still at the front: step over them in place.
                var found: DeliveredTask?
                try c.walk(from: prefix) { (key, value) throws(StorageError) in
                    guard key.starts(with: prefix) else { return false }
                    let id = UInt64(bigEndianBytes: value)
                    guard !skipping.contains(id),
                          let (deliveries, payload) = try txn.withValue(t.tasks, StoreTables.taskKey(id), TaskRecord.deliveryFields)
                    else { return true }
                    found = DeliveredTask(id: id, queue: queue, payload: payload, delivery: Int(deliveries) + 1)
                    return false
                }
                return found
            }
        }
    }

    func nextDelayedDue() throws(StorageError) -> Millis? {
        try read { (txn) throws(StorageError) in
            try txn.withCursor(t.delayed) { (c) throws(StorageError) -> Millis? in
                guard let e = try c.first() else { return nil }
                var r = ByteReader(e.key)
                return try r.i64()
            }
        }
    }
}
