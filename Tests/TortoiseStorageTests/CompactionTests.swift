import Foundation
import Testing
import TortoiseTestSupport
@testable import TortoiseStorage

/// LMDB's file compacted at open once a backlog came and went.
@Suite struct CompactionTests {
    private func configuration(_ dir: String) -> TaskStore.Configuration {
        var c = testConfiguration(dir)
        c.compactFilesFrom = 1 << 20
        return c
    }

    private func fileSize(_ dir: String) -> Int {
        (try? FileManager.default.attributesOfItem(atPath: dir + "/data.mdb")[.size] as? Int) ?? 0
    }

    /// A store with a drained backlog, a few tasks kept in a queue and a few failures.
    private func drainedStore(_ dir: String) async throws -> (kept: [TaskID], failed: [TaskID]) {
        var c = configuration(dir)
        c.compactCheckInterval = nil
        let store = try TaskStore(c)
        let result = try await fillAndDrain(store)
        #expect(store.compactedAtOpen == nil)
        store.close()
        return result
    }

    /// Six tasks kept in `keep`, 1,600 of 2 KB put in `backlog` and taken again (three
    /// failed, the rest acked).
    private func fillAndDrain(_ store: TaskStore) async throws -> (kept: [TaskID], failed: [TaskID]) {
        let payload = String(repeating: "p", count: 2000)
        var kept: [TaskID] = []
        for i in 0..<6 { kept.append(try await store.put("keep", "kept \(i)")) }
        // 16 callers at once, so that group commit makes this quick.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<16 {
                group.addTask { for _ in 0..<100 { _ = try await store.put("backlog", payload) } }
            }
            try await group.waitForAll()
        }
        let failed = try await withThrowingTaskGroup(of: [TaskID].self) { group in
            for caller in 0..<16 {
                group.addTask {
                    var failed: [TaskID] = []
                    while let t = try await store.take("backlog") {
                        if caller == 0 && failed.count < 3 {
                            _ = try await store.perform(.nack(t.id, error: "boom \(t.id)"))
                            failed.append(t.id)
                        } else {
                            _ = try await store.perform(.ack(t.id))
                        }
                    }
                    return failed
                }
            }
            return try await group.reduce([], +)
        }
        return (kept, failed.sorted())
    }

    @Test func aFileThatIsMostlyFreeIsCompactedWhileTheStoreRuns() async throws {
        let dir = freshDirectory()
        var c = configuration(dir)
        c.compactCheckInterval = .milliseconds(20)
        let told = Counter()
        c.compacted = { before, after, _ in if after < before { told.add() } }
        let store = try TaskStore(c)
        // Readers all the while: none may fail or see a queue out of order.
        let reading = Task.detached {
            var reads = 0
            while !Task.isCancelled {
                let keep = try store.readyIDs("keep")
                #expect(keep == keep.sorted())
                _ = try store.counts()
                _ = try store.peekReady("backlog", skipping: [])
                reads += 1
            }
            return reads
        }
        let (kept, failed) = try await fillAndDrain(store)
        // The drained file is compacted within a few checks (one may also have come while
        // the backlog was growing).
        let deadline = Date().addingTimeInterval(10)
        while fileSize(dir) >= 2 << 20 && Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(store.compactionsWhileRunning >= 1)
        #expect(told.value == store.compactionsWhileRunning)
        reading.cancel()
        #expect(try await reading.value > 0)
        #expect(fileSize(dir) < 2 << 20, "\(fileSize(dir)) bytes")
        #expect(try store.readyIDs("keep") == kept)
        var boom = FailedQuery()
        boom.words = ["boom"]
        #expect(try store.failed(boom, limit: 10).tasks.map(\.id).sorted() == failed)
        // Changes go on, and so do checkpoints.
        let next = try await store.put("keep", "after")
        #expect(try await store.takeText("keep") == "kept 0")
        try await Task.sleep(for: .milliseconds(50))
        store.close()
        var plain = configuration(dir)
        plain.compactFilesFrom = nil
        let again = try TaskStore(plain)
        #expect(try again.readyIDs("keep") == kept + [next])
        again.close()
    }

    /// The copy is written while changes go on; those made meanwhile are applied to it
    /// before it takes the file's place, and are there after a reopen.
    @Test func changesMadeWhileTheCopyIsWrittenAreKept() async throws {
        let dir = freshDirectory()
        var c = configuration(dir)
        c.compactCheckInterval = nil
        let store = try TaskStore(c)
        // 4 MB that stay (the copy takes a while), 12 MB put and acked.
        let payload = String(repeating: "k", count: 2000)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for w in 0..<16 {
                group.addTask {
                    for i in 0..<125 { _ = try await store.put("stays", "\(w)-\(i)-\(payload)") }
                    for _ in 0..<375 { _ = try await store.put("backlog", payload) }
                    while let t = try await store.take("backlog") { _ = try await store.perform(.ack(t.id)) }
                }
            }
            try await group.waitForAll()
        }
        store.close()
        let before = fileSize(dir)
        #expect(before > 12 << 20, "\(before) bytes")
        var running = configuration(dir)
        // The first check comes after the writers below have started: with 10 ms, a slow
        // build (AddressSanitizer) finished the whole compaction before their first put,
        // and nothing was left to test.
        running.compactCheckInterval = .milliseconds(300)
        running.compactLiveAtMost = 0  // not at open: while running
        // The copy of ~4 MiB takes a few ms: with the machine busy (the whole suite at
        // once) no change was sometimes committed in that time. It is held back until a
        // few puts more are confirmed (so committed after its snapshot), 2 s at most.
        let confirmedPuts = Counter()
        running.afterCompactedCopy = {
            let (start, deadline) = (confirmedPuts.value, Date().addingTimeInterval(2))
            while confirmedPuts.value < start + 8 && Date() < deadline { usleep(1000) }
        }

        let busy = try TaskStore(running)
        #expect(busy.compactedAtOpen == nil)
        let stays = try busy.readyIDs("stays")
        #expect(stays.count == 2000)
        // A reader all the while: only puts happen, so what it sees never shrinks (the
        // file's state must not go back to the copy's while the copy catches up).
        let watching = Task.detached {
            var seen = 0
            var shrank = 0
            while !Task.isCancelled {
                let now = try busy.readyIDs("during").count
                if now < seen { shrank += 1 }
                seen = max(seen, now)
            }
            return shrank
        }
        // Changes all the while, until a compaction is done.
        let confirmed = try await withThrowingTaskGroup(of: [TaskID].self) { group in
            for w in 0..<8 {
                group.addTask {
                    var ids: [TaskID] = []
                    while busy.compactionsWhileRunning == 0 && ids.count < 20_000 {
                        ids.append(try await busy.put("during", "\(w)-\(ids.count)"))
                        confirmedPuts.add()
                    }
                    return ids
                }
            }
            return try await group.reduce([], +)
        }
        watching.cancel()
        #expect(try await watching.value == 0, "a reader saw the queue shrink")
        #expect(busy.compactionsWhileRunning == 1)
        #expect(busy.batchesAppliedToCopies > 0, "no change came while the copy was written")
        #expect(fileSize(dir) * 2 < before, "\(before) -> \(fileSize(dir)) bytes")
        #expect(try busy.readyIDs("during") == confirmed.sorted())
        #expect(try busy.readyIDs("stays") == stays)
        let next = try await busy.put("during", "after")
        #expect(next > confirmed.max()!)
        busy.close()
        var plain = configuration(dir)
        plain.compactFilesFrom = nil
        let again = try TaskStore(plain)
        #expect(try again.readyIDs("during") == confirmed.sorted() + [next])
        #expect(try again.readyIDs("stays") == stays)
        again.close()
    }

    /// Driven by hand (one thread is the writer): thousands of puts land after the copy
    /// is written and before it is put in place, enough that the writer raised its stored
    /// bound on ids meanwhile. The new file must hold the raised bound: a reopened store
    /// that read the copy's older bound would hand out the same ids again.
    @Test func idsHandedOutWhileTheCopyIsWrittenAreNotHandedOutAgain() throws {
        let dir = freshDirectory()
        let open = { () throws -> StoreEngine in
            let e = try StoreEngine(directory: dir, options: .init(), maxDeliveries: 10, logFileSize: 256 << 10)
            _ = try e.replayLog()
            return e
        }
        let put = { (e: StoreEngine, n: Int) throws -> [TaskID] in
            let ops = (0..<n).map { _ in StoreOperation.put(queue: "q", payload: Array("x".utf8)) }
            return try e.apply(ops).map { r -> TaskID in
                guard case .put(let id) = try r.get() else { throw StorageError(.io, "not a put") }
                return id
            }
        }
        var engine = try open()
        // A file that is mostly free: 2 MB put and taken away again.
        let big = [UInt8](repeating: 0x62, count: 2000)
        for _ in 0..<10 {
            let ids = try engine.apply((0..<100).map { _ in .put(queue: "big", payload: big) }).map { r -> TaskID in
                guard case .put(let id) = try r.get() else { throw StorageError(.io, "not a put") }
                return id
            }
            _ = engine.apply(ids.map { _ in .take(queue: "big") })
            _ = engine.apply(ids.map { .ack($0) })
        }
        let copied = DispatchSemaphore(value: 0)
        #expect(engine.startCompaction(policy: .init(minFileBytes: 0, maxLiveBytes: 1 << 30)) { copied.signal() })
        copied.wait()
        var ids: [TaskID] = []
        for _ in 0..<60 { ids += try put(engine, 100) }  // 6,000 ids: past one reservation (4,096)
        let done = try engine.finishCompaction()
        #expect(done?.replayed == 60)
        try engine.checkpoint()
        engine.shutDown()
        engine = try open()
        let next = try put(engine, 1)
        #expect(next[0] > ids.max()!, "id \(next[0]) handed out again (the last one before was \(ids.max()!))")
        #expect(try engine.read { (txn) throws(StorageError) in try txn.count(engine.t.ready) } == ids.count + 1)
        engine.shutDown()
    }

    @Test func aFileThatIsMostlyFreeIsCompactedAtOpenAndKeepsEverything() async throws {
        let dir = freshDirectory()
        let (kept, failed) = try await drainedStore(dir)
        let before = fileSize(dir)
        #expect(before > 4 << 20)

        let store = try TaskStore(configuration(dir))
        #expect(store.compactedAtOpen?.before == before)
        let after = store.compactedAtOpen?.after ?? before
        #expect(after * 4 < before, "\(before) -> \(after) bytes")
        #expect(try store.readyIDs("keep") == kept)
        #expect(try store.readyIDs("backlog").isEmpty)
        var boom = FailedQuery()
        boom.words = ["boom"]
        #expect(try store.failed(boom, limit: 10).tasks.map(\.id).sorted() == failed)
        // Ids go on past every id handed out before.
        let next = try await store.put("keep", "after")
        #expect(next > (kept + failed).max()!)
        #expect(try await store.takeText("keep") == "kept 0")
        #expect(failed.count == 3)
        store.close()

        // The compacted file checkpoints, closes and opens like any other (and is left
        // as it is now); the task taken goes back to the front.
        let again = try TaskStore(configuration(dir))
        #expect(again.compactedAtOpen == nil)
        #expect(try again.readyIDs("keep") == kept + [next])
        again.close()
    }

    /// A compacted file has no free pages, and LMDB maps just the pages a file uses when
    /// it is bigger than the starting map size: the open's own first write then found the
    /// map full, and a store with more live data than the starting map could not open
    /// after a compaction at open, nor after a crash or power cut that followed one.
    @Test func aCompactedFileBiggerThanTheStartingMapOpensAndTakesChanges() async throws {
        let dir = freshDirectory()
        var c = configuration(dir)
        c.compactFilesFrom = nil
        c.compactCheckInterval = nil
        let store = try TaskStore(c)
        let payload = String(repeating: "p", count: 60_000)
        var kept: [TaskID] = []
        for i in 0..<80 {
            let id = try await store.put("q", payload)
            if i % 2 == 0 { kept.append(id) }
        }
        // Half of them acked: the other half, taken back, fill the space they leave.
        while let t = try await store.take("q") {
            if !kept.contains(t.id) { _ = try await store.perform(.ack(t.id)) }
        }
        store.close()

        // Compacted at open to more than the 1 MiB map the configuration starts with.
        let compacting = try TaskStore(configuration(dir))
        let after = try #require(compacting.compactedAtOpen?.after)
        #expect(after > 2 << 20, "compacted to \(after) bytes: not bigger than the starting map")
        let next = try await compacting.put("q", "after")
        #expect(try compacting.readyIDs("q") == kept + [next])
        compacting.close()
    }

    @Test func whileRunningAQuarterFreeIsEnoughIfItIsEnoughRoom() {
        let mib = 1 << 20
        let defaults = TaskStore.Configuration(directory: "/unused")
        #expect(defaults.compactFilesFrom == 16 * mib && defaults.compactLiveWhileRunningAtMost == 256 * mib)
        // As the store builds it from those: as much free as the smallest file compacted.
        let running = StoreEngine.Compaction(minFileBytes: 16 * mib, maxLiveBytes: 256 * mib, maxLiveShare: 0.75, minFreeBytes: 16 * mib)
        let atOpen = StoreEngine.Compaction(minFileBytes: 16 * mib, maxLiveBytes: 256 * mib)
        // A backlog of 200,000 drained beside 600,000 that stay (compare's consume rows).
        #expect(running.allows(liveBytes: 123 * mib, fileBytes: 173 * mib))
        #expect(!atOpen.allows(liveBytes: 123 * mib, fileBytes: 173 * mib))
        #expect(atOpen.allows(liveBytes: 80 * mib, fileBytes: 173 * mib))
        // Less than a quarter free; a quarter, but less room than the least; too much live;
        // too small a file.
        #expect(!running.allows(liveBytes: 140 * mib, fileBytes: 173 * mib))
        #expect(!running.allows(liveBytes: 40 * mib, fileBytes: 50 * mib))
        #expect(!running.allows(liveBytes: 38 * mib, fileBytes: 50 * mib))
        #expect(running.allows(liveBytes: 34 * mib, fileBytes: 50 * mib))
        #expect(!running.allows(liveBytes: 300 * mib, fileBytes: 600 * mib))
        #expect(!running.allows(liveBytes: 1 * mib, fileBytes: 15 * mib))
    }

    @Test func whileRunningLessFreeRoomThanTheSmallestFileIsLeftAsItIs() async throws {
        let dir = freshDirectory()
        _ = try await drainedStore(dir)
        let before = fileSize(dir)
        var c = configuration(dir)
        c.compactLiveAtMost = 0  // not at open
        c.compactCheckInterval = .milliseconds(20)
        // The file is big enough, but what is free in it (less than all of it) is not.
        c.compactFilesFrom = before
        let store = try TaskStore(c)
        try await Task.sleep(for: .milliseconds(300))
        #expect(store.compactionsWhileRunning == 0)
        #expect(fileSize(dir) == before)
        store.close()
        // The same store with 1 MiB is compacted (so the above could fail).
        c.compactFilesFrom = 1 << 20
        let again = try TaskStore(c)
        let deadline = Date().addingTimeInterval(10)
        while again.compactionsWhileRunning == 0 && Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(again.compactionsWhileRunning == 1)
        #expect(fileSize(dir) < before)
        again.close()
    }

    @Test func aFileWithLittleFreeSpaceOrBelowTheSizeIsLeftAsItIs() async throws {
        let dir = freshDirectory()
        _ = try await drainedStore(dir)
        let before = fileSize(dir)
        var c = configuration(dir)
        c.compactFilesFrom = before + 1
        let store = try TaskStore(c)
        #expect(store.compactedAtOpen == nil)
        #expect(fileSize(dir) == before)
        store.close()
        c.compactFilesFrom = 1 << 20
        c.compactLiveAtMost = 4096
        let limited = try TaskStore(c)
        #expect(limited.compactedAtOpen == nil)
        limited.close()
    }

    /// Batches the log holds beyond the checkpoint are applied to the compacted file.
    @Test func theLogIsReplayedOntoTheCompactedFile() async throws {
        let dir = freshDirectory()
        let (kept, _) = try await drainedStore(dir)
        var c = configuration(dir)
        c.compactFilesFrom = nil
        c.flushesDataInBackground = false
        let store = try TaskStore(c)
        try store.flushData()
        // What a crash would leave: LMDB's file as of that checkpoint, the log as of later.
        let crashed = freshDirectory()
        try FileManager.default.createDirectory(atPath: crashed, withIntermediateDirectories: true)
        for f in ["data.mdb", "checkpoint"] { try FileManager.default.copyItem(atPath: dir + "/" + f, toPath: crashed + "/" + f) }
        var later: [TaskID] = []
        for i in 0..<5 { later.append(try await store.put("keep", "later \(i)")) }
        for f in ["wal-0", "wal-1"] { try FileManager.default.copyItem(atPath: dir + "/" + f, toPath: crashed + "/" + f) }
        store.close()

        let reopened = try TaskStore(configuration(crashed))
        #expect(reopened.compactedAtOpen != nil)
        #expect(reopened.replayedAtOpen == 5)
        #expect(try reopened.readyIDs("keep") == kept + later)
        #expect(try await reopened.put("keep", "next") > later.last!)
        reopened.close()
    }

    /// On a real disk: a power cut right after the compacting open loses nothing.
    @Test func aPowerCutAfterTheCompactingOpenLosesNothing() async throws {
        guard let disk = faultyDisk() else { return }
        defer { disk.tearDown() }
        let dir = disk.mountPoint + "/data"
        let (kept, failed) = try await drainedStore(dir)
        // Nothing may write while the disk is copied (see FaultyDisk.powerCut()): no
        // background checkpoints, no compaction checks. The put after the open is then
        // only in the log, which the next open replays onto the compacted file.
        var quiet = configuration(dir)
        quiet.flushesDataInBackground = false
        quiet.compactCheckInterval = nil
        let store = try TaskStore(quiet)
        #expect(store.compactedAtOpen != nil)
        let next = try await store.put("keep", "after")
        let checkpoint = try Data(contentsOf: URL(fileURLWithPath: dir + "/checkpoint"))
        let afterCut = try disk.powerCut()
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/checkpoint")) == checkpoint,
                "a checkpoint was written while the disk was copied: the copy is no power-cut image")
        store.close()
        var c = configuration(afterCut + "/data")
        c.compactFilesFrom = nil
        let restored = try TaskStore(c)
        #expect(try restored.readyIDs("keep") == kept + [next])
        #expect(try restored.allFailures().map(\.id).sorted() == failed)
        restored.close()
    }

    /// The states a crash during the compaction can leave all open whole.
    @Test func aCompactionCutShortAtAnyStepOpensWhole() async throws {
        // The copy half written: removed at open.
        let dir = freshDirectory()
        let (kept, _) = try await drainedStore(dir)
        try Data(repeating: 0xAB, count: 100_000).write(to: URL(fileURLWithPath: dir + "/data.mdb.compact"))
        var c = configuration(dir)
        c.compactFilesFrom = nil
        let s1 = try TaskStore(c)
        #expect(try s1.readyIDs("keep") == kept)
        s1.close()
        #expect(!FileManager.default.fileExists(atPath: dir + "/data.mdb.compact"))

        // The checkpoint file removed, the old file still in place.
        try FileManager.default.removeItem(atPath: dir + "/checkpoint")
        let s2 = try TaskStore(c)
        #expect(try s2.readyIDs("keep") == kept)
        s2.close()
        #expect(CheckpointFile.latest(in: dir, pageSize: 4096) != nil)

        // The copy in place, the checkpoint file not written yet.
        let s3 = try TaskStore(configuration(dir))
        #expect(s3.compactedAtOpen != nil)
        s3.close()
        try FileManager.default.removeItem(atPath: dir + "/checkpoint")
        let s4 = try TaskStore(c)
        #expect(try s4.readyIDs("keep") == kept)
        s4.close()
    }
}

/// A count kept across threads.
private final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func add() { lock.withLock { n += 1 } }
    var value: Int { lock.withLock { n } }
}
