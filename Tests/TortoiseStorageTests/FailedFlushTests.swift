import Foundation
import Testing
import TortoiseTestSupport
@testable import TortoiseStorage

/// A flush that the disk fails, on a real disk whose writes fail (``FaultyDisk``).
///
/// Linux reports a failed writeback once and may then call the pages clean: a later
/// `fdatasync` succeeds without them. A store that went on after a failed flush of its
/// log would confirm later changes while an earlier record never reached the disk, and
/// after a power cut the replay would stop at that hole, losing the confirmed ones.
@Suite(.serialized) struct FailedFlushTests {
    /// A store in `data` on a new ``FaultyDisk``, the disk, and what the store reports
    /// when it halts; nil, with a recorded issue saying why, where there is no such disk
    /// (it needs root and loop devices).
    private func storeOnFaultyDisk(_ name: String = #function) throws -> (store: TaskStore, disk: FaultyDisk, dir: String, halts: Halts)? {
        guard let disk = faultyDisk(in: nil, name) else { return nil }
        let dir = disk.mountPoint + "/data"
        let halts = Halts()
        // The power cut comes before the next checkpoint of LMDB's file (in production
        // one runs every 10 ms): only the log holds the latest changes.
        var c = testConfiguration(dir, backgroundCheckpoints: false)
        c.halted = { e in halts.record(e) }
        do {
            return (try TaskStore(c), disk, dir, halts)
        } catch {
            disk.tearDown()
            throw error
        }
    }

    @Test func aFailedLogFlushHaltsTheStoreAndAPowerCutLosesNothingConfirmed() async throws {
        guard let (store, disk, dir, halts) = try storeOnFaultyDisk() else { return }
        defer { disk.tearDown() }
        // A first record that fills the log's first page exactly; from the second page
        // on, writes fail. The next record spans three pages, and all three fail.
        var confirmed = [try await store.put("q", String(repeating: "a", count: 4096 - logOverhead(queue: "q")))]
        try disk.failWrites(to: dir + "/wal-0", from: 4096)
        let big = String(repeating: "b", count: 10_000)
        await #expect { _ = try await store.put("q", big) } throws: { ($0 as? StorageError)?.code == .halted }
        #expect(store.haltedBy?.message.contains("flushing the redo log") == true, "\(String(describing: store.haltedBy))")
        // The owner hears of it once the failed callers have their errors.
        #expect(halts.waitForFirst(seconds: 5))

        // The disk has room again. This record shares the last page of the failed one and
        // would now reach the disk, but the record before it would not: a store that
        // confirmed it would lose it at the power cut below.
        try disk.heal()
        do {
            confirmed.append(try await store.put("q", "after the fault"))
            Issue.record("a change was confirmed after a failed flush")
        } catch let e as StorageError {
            #expect(e.code == .halted)
            #expect(e.message.contains("no more changes"), "\(e.message)")
        }
        // Reads go on.
        #expect(try store.readyIDs("q").count == 2)

        let afterCut = try disk.powerCut()
        store.close()
        let reopened = try openStore(afterCut + "/data")
        let present = try reopened.readyIDs("q")
        for id in confirmed { #expect(present.contains(id), "confirmed task \(id) lost in the power cut") }
        // The store opened on what reached the disk takes changes again.
        _ = try await reopened.put("q", "after the restart")
        reopened.close()
        #expect(halts.count == 1)
    }

    @Test func aFailedCheckpointHaltsTheStoreAndReopeningRecovers() async throws {
        guard let (store, disk, dir, halts) = try storeOnFaultyDisk() else { return }
        defer { disk.tearDown() }
        let first = try await store.put("q", "one")
        // LMDB writes one of its two meta pages, at the front of its file, at every commit.
        try disk.failWrites(to: dir + "/data.mdb", from: 0)
        let second = try await store.put("q", "two")
        #expect { try store.flushData() } throws: { ($0 as? StorageError)?.code == .halted }
        #expect(store.haltedBy?.message.contains("checkpointing the store's file failed") == true, "\(String(describing: store.haltedBy))")
        try disk.heal()
        // Room again, but the pages that failed are gone from the disk: no more changes
        // and no more checkpoints (one now would record a file that is not whole).
        await #expect { _ = try await store.put("q", "three") } throws: { ($0 as? StorageError)?.code == .halted }
        #expect { try store.flushData() } throws: { ($0 as? StorageError)?.code == .halted }
        #expect(halts.count == 1)
        store.close()

        // Opened again (a restart), the store rebuilds from the last checkpoint and the log.
        let reopened = try openStore(dir)
        #expect(try reopened.readyIDs("q") == [first, second])
        _ = try await reopened.put("q", "three")
        reopened.close()
    }
}

/// The bytes a logged batch of one put to `queue` takes besides its payload.
func logOverhead(queue: String) -> Int {
    LoggedBatch(number: 1, now: 0, nextID: 1, nextSeq: 1, maxDeliveries: 10, ops: [.put(queue: queue, payload: [])]).encoded().count
}

/// The halts a store reported.
private final class Halts: @unchecked Sendable {
    private let lock = NSLock()
    private var errors: [StorageError] = []
    func record(_ e: StorageError) { lock.withLock { errors.append(e) } }
    var count: Int { lock.withLock { errors.count } }
    /// Whether one came within `seconds`.
    func waitForFirst(seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while count == 0 && Date() < deadline { usleep(1000) }
        return count > 0
    }
}
