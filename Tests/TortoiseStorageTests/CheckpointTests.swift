import Foundation
import Testing
@testable import TortoiseStorage

/// Power cuts. LMDB's file is flushed in the background without ordering, so a power cut
/// during a flush can leave on disk any mix of the pages written since the last
/// checkpoint: old, new or torn, meta pages included. The checkpointed snapshot's pages
/// are never written over until the next checkpoint is on disk, and its meta page is put
/// back at open; the redo log then brings back everything confirmed since.
@Suite struct CheckpointTests {
    static func pages(_ data: [UInt8], _ size: Int) -> [[UInt8]] {
        stride(from: 0, to: data.count, by: size).map { Array(data[$0..<min(data.count, $0 + size)]) }
    }

    /// A disk image after a cut: each page written since `base` is there in its `cache`
    /// version, still the `base` one, or garbage, as `pick` says.
    static func image(base: [UInt8], cache: [UInt8], pageSize: Int, pick: (Int) -> Int) -> [UInt8] {
        var garbage = [UInt8](repeating: 0, count: pageSize)
        for i in stride(from: 0, to: pageSize, by: 8) {
            withUnsafeBytes(of: UInt64.random(in: 0...UInt64.max)) { garbage.replaceSubrange(i..<i + 8, with: $0) }
        }
        let old = pages(base, pageSize)
        let new = pages(cache, pageSize)
        var out: [UInt8] = []
        for i in 0..<new.count {
            let b = i < old.count ? old[i] : [UInt8](repeating: 0, count: pageSize)
            if b == new[i] { out += b; continue }
            switch pick(i) {
            case 0: out += b
            case 1: out += new[i]
            default: out += garbage
            }
        }
        return out
    }

    @Test func aPowerCutDuringAFlushLosesNothingConfirmed() async throws {
        let dir = freshDirectory()
        let c = testConfiguration(dir, backgroundCheckpoints: false)
        let store = try TaskStore(c)
        try await RedoLogTests.work(store, rounds: 10)
        try store.flushData()
        // The disk at the checkpoint.
        let base = try [UInt8](Data(contentsOf: URL(fileURLWithPath: dir + "/data.mdb")))
        let checkpoint = try Data(contentsOf: URL(fileURLWithPath: dir + "/checkpoint"))
        try await RedoLogTests.work(store, rounds: 30)
        let lastID = try await store.put("q0", "last")
        // The moment of the cut: the log is flushed (every change above was confirmed);
        // LMDB's file is whatever the page cache had, of which any part may be lost.
        let cache = try [UInt8](Data(contentsOf: URL(fileURLWithPath: dir + "/data.mdb")))
        var logs: [String: Data] = [:]
        for f in ["wal-0", "wal-1"] { logs[f] = try Data(contentsOf: URL(fileURLWithPath: dir + "/" + f)) }
        store.close()
        let queues = ["q0", "q1", "q2"]
        let original = try TaskStore(c)
        let expected = try RedoLogTests.Snapshot(original, queues: queues)
        original.close()

        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        let changed = (0..<(cache.count / pageSize)).filter { i in
            (i + 1) * pageSize > base.count || base[(i * pageSize)..<((i + 1) * pageSize)] != cache[(i * pageSize)..<((i + 1) * pageSize)]
        }
        #expect(changed.contains(0) || changed.contains(1), "no newer meta page: the cut would prove nothing")
        #expect(changed.count > 10)
        // Every page new (a whole flush), every page torn, and random mixes.
        let picks: [(Int) -> Int] = [{ _ in 1 }, { _ in 2 }, { $0 < 2 ? 1 : 2 }]
            + (0..<5).map { _ in { _ in Int.random(in: 0...2) } }
        for (n, pick) in picks.enumerated() {
            let copy = freshDirectory()
            try FileManager.default.createDirectory(atPath: copy, withIntermediateDirectories: true)
            try Data(Self.image(base: base, cache: cache, pageSize: pageSize, pick: pick)).write(to: URL(fileURLWithPath: copy + "/data.mdb"))
            try checkpoint.write(to: URL(fileURLWithPath: copy + "/checkpoint"))
            for (f, d) in logs { try d.write(to: URL(fileURLWithPath: copy + "/" + f)) }
            var cc = c
            cc.directory = copy
            let restored = try TaskStore(cc)
            let got = try RedoLogTests.Snapshot(restored, queues: queues)
            #expect(got == expected, "image \(n)")
            #expect(got.ready["q0"]?.last == lastID, "image \(n)")
            restored.close()
            try? FileManager.default.removeItem(atPath: copy)
        }
    }

    @Test func aTornCheckpointLeavesTheOtherOne() throws {
        let dir = freshDirectory()
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let page = (0..<4096).map { UInt8(truncatingIfNeeded: $0) }
        do {
            let file = try CheckpointFile(directory: dir, pageSize: 4096)
            try file.write(Checkpoint(txnid: 7, batch: 70, metaPage: page))
            try file.write(Checkpoint(txnid: 9, batch: 90, metaPage: page.reversed()))
            #expect(file.latest == Checkpoint(txnid: 9, batch: 90, metaPage: page.reversed()))
            // The third goes over the older one (7), keeping 9.
            try file.write(Checkpoint(txnid: 11, batch: 110, metaPage: page))
            #expect(file.latest?.txnid == 11)
        }
        // Tear the newest (slot 0 now holds 11): a byte of its page flipped.
        let path = dir + "/checkpoint"
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        bytes[32 + 100] ^= 0x40
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        #expect(CheckpointFile.latest(in: dir, pageSize: 4096) == Checkpoint(txnid: 9, batch: 90, metaPage: page.reversed()))
    }
}
