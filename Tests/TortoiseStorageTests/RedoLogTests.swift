import Foundation
import Testing
@testable import TortoiseStorage

@Suite struct RedoLogTests {
    static let everyOperation: [StoreOperation] = {
        var q = FailedQuery()
        q.words = ["timeout"]
        q.phrases = ["read timed out"]
        q.queues = ["emails", "pdf"]
        q.ids = [7, 9]
        q.since = 1_700_000_000_000
        q.payloadTexts = ["alice"]
        q.groups = [0xDEAD_BEEF]
        var open = FailedQuery()
        open.before = 5
        return [
            .put(queue: "emails", payload: Array("hello\r\n\0\u{ff}".utf8)),
            .take(queue: "pdf"), .claim(42), .ack(43), .nack(44, error: "Timeout: read timed out après 30 s"),
            .requeue(45, readyAt: nil), .requeue(46, readyAt: 1_800_000_000_000), .release(47), .promoteDue,
            .replay(q), .delete(open), .prune(olderThan: 123, limit: 1000),
        ]
    }()

    @Test func aRecordReadsBackAsWritten() throws {
        let batch = LoggedBatch(number: 77, now: 1_750_000_000_123, nextID: 5000, nextSeq: 6000, maxDeliveries: 3,
                                ops: Self.everyOperation)
        var bytes = [UInt8](repeating: 0, count: 10)
        bytes += batch.encoded()
        bytes += [UInt8](repeating: 0, count: 64)
        let (read, next) = try #require(LoggedBatch.decode(bytes, at: 10))
        #expect(read == batch)
        #expect(next == bytes.count - 64)
        // Zeros after it are not a record.
        #expect(LoggedBatch.decode(bytes, at: next) == nil)
    }

    /// The checksum in every record and checkpoint already on disk is the standard
    /// CRC-32: a different one would make a store unreadable after an upgrade.
    @Test func theChecksumIsTheStandardCRC32() {
        #expect(CRC32.checksum([UInt8]()) == 0)
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(CRC32.checksum(Array("The quick brown fox jumps over the lazy dog".utf8)) == 0x414F_A339)
        let bytes = Array("xx123456789".utf8)
        #expect(CRC32.checksum(bytes[2...]) == 0xCBF4_3926)
        // What earlier builds computed with a byte-at-a-time table, over a whole record.
        var table: [UInt32] = []
        for i in UInt32(0)..<256 {
            var c = i
            for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
            table.append(c)
        }
        let record = LoggedBatch(number: 9, now: 8, nextID: 7, nextSeq: 6, maxDeliveries: 5, ops: Self.everyOperation).encoded()
        var c: UInt32 = 0xFFFF_FFFF
        for b in record { c = table[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        #expect(CRC32.checksum(record) == c ^ 0xFFFF_FFFF)
    }

    @Test func aDamagedRecordIsNotRead() {
        let record = LoggedBatch(number: 1, now: 2, nextID: 3, nextSeq: 4, maxDeliveries: 5, ops: Self.everyOperation).encoded()
        for i in stride(from: 0, to: record.count, by: 7) {
            var damaged = record
            damaged[i] ^= 0x20
            #expect(LoggedBatch.decode(damaged, at: 0) == nil, "a flipped bit at byte \(i) went unnoticed")
        }
        // Cut short (a torn write).
        #expect(LoggedBatch.decode(Array(record.dropLast(3)), at: 0) == nil)
    }

    /// Everything a store can be asked about, to compare two stores.
    struct Snapshot: Equatable {
        var counts: [String: QueueCounts]
        var ready: [String: [TaskID]]
        var failed: [FailedTask]
        var pruned: Int
        var delayedDue: Millis?

        init(_ store: TaskStore, queues: [String]) throws {
            counts = try store.counts()
            ready = [:]
            for q in queues { ready[q] = try store.readyIDs(q) }
            failed = try store.allFailures().sorted { $0.id < $1.id }
            pruned = try store.prunedCount()
            delayedDue = try store.nextDelayedDue()
        }
    }

    /// A store does a mix of everything, in batches large and small.
    static func work(_ store: TaskStore, rounds: Int, payload: Int = 40) async throws {
        let text = String(repeating: "p", count: payload)
        for r in 0..<rounds {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for c in 0..<8 {
                    group.addTask { _ = try await store.put("q\(c % 3)", "\(r)-\(c)-\(text)") }
                }
                try await group.waitForAll()
            }
            for q in ["q0", "q1", "q2"] {
                guard let t = try await store.take(q) else { continue }
                switch (r + t.id.hashValue) % 4 {
                case 0: _ = try await store.perform(.ack(t.id))
                case 1: _ = try await store.perform(.nack(t.id, error: "Timeout after \(r) s in \(q)"))
                case 2: _ = try await store.perform(.requeue(t.id, readyAt: r % 2 == 0 ? nil : currentMillis() + 3_600_000))
                default: break  // left in flight
                }
            }
            if r % 7 == 3 {
                var q = FailedQuery()
                q.queues = ["q1"]
                _ = try await store.perform(.replay(q))
            }
            if r % 11 == 5 {
                var q = FailedQuery()
                q.words = ["timeout"]
                q.queues = ["q2"]
                _ = try await store.perform(.delete(q))
            }
        }
    }

    /// A power loss can leave LMDB's file as it was at its last background flush while
    /// the redo log has every change reported durable since: a store opened on that
    /// file and the log must be the store as it was. Simulated by copying LMDB's file
    /// at a flush, carrying on, and then opening that copy with the log files.
    @Test(arguments: [1 << 20, 24 << 10])
    func theLogBringsBackWhatLMDBsFileLost(logFileSize: Int) async throws {
        let dir = freshDirectory()
        let copy = freshDirectory()
        try FileManager.default.createDirectory(atPath: copy, withIntermediateDirectories: true)
        let c = testConfiguration(dir, backgroundCheckpoints: false, logFileSize: logFileSize)
        let store = try TaskStore(c)
        try await Self.work(store, rounds: 10)
        try store.flushData()
        try FileManager.default.copyItem(atPath: dir + "/data.mdb", toPath: copy + "/data.mdb")
        try await Self.work(store, rounds: 40, payload: logFileSize > 100_000 ? 40 : 400)
        if logFileSize < 100_000 { #expect(store.logSwitches >= 1) }
        let lastID = try await store.put("q0", "last")
        for f in ["wal-0", "wal-1"] { try FileManager.default.copyItem(atPath: dir + "/" + f, toPath: copy + "/" + f) }
        let queues = ["q0", "q1", "q2"]
        store.close()

        // The copy still has the older LMDB file: it knows less.
        var cc = c
        cc.directory = copy
        let restored = try TaskStore(cc)
        #expect(restored.replayedAtOpen > 0)
        let got = try Snapshot(restored, queues: queues)
        // Opening returns in-flight tasks, as any reopen does: compare after the same on the original.
        let original = try TaskStore(c)
        #expect(restored.recoveredAtOpen == original.recoveredAtOpen)
        #expect(got == (try Snapshot(original, queues: queues)))
        #expect(got.ready["q0"]?.last == lastID)
        // Ids go on past every id the original handed out.
        #expect(try await restored.put("q0", "next") > lastID)
        original.close()
        restored.close()
    }
}

@Suite struct RedoLogUpkeepTests {
    /// With the background flush on, the writer keeps moving between the two log files:
    /// the log stays about two files' worth however much is written.
    @Test func theLogStaysSmallUnderALongRun() async throws {
        let dir = freshDirectory()
        let store = try TaskStore(testConfiguration(dir, logFileSize: 32 << 10))
        defer { store.close() }
        let payload = String(repeating: "x", count: 1000)
        for _ in 0..<40 {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for q in 0..<16 { group.addTask { _ = try await store.put("q\(q % 4)", payload) } }
                try await group.waitForAll()
            }
        }
        // 640 puts of 1 KB: 20 times a file.
        #expect(store.logSwitches >= 8)
        for f in ["wal-0", "wal-1"] {
            let size = try #require(try FileManager.default.attributesOfItem(atPath: dir + "/" + f)[.size] as? Int)
            #expect(size <= 8 * (32 << 10), "\(f) grew to \(size) bytes")
        }
    }

    /// A log file that grew past its size while no checkpoint freed the other one (here:
    /// none is taken) goes back to its size at the next open, and nothing is lost; so does
    /// a log written with a larger size (an older default).
    @Test func grownLogFilesShrinkAtOpen() async throws {
        let dir = freshDirectory()
        let c = testConfiguration(dir, backgroundCheckpoints: false, logFileSize: 32 << 10)
        func sizes() throws -> [Int] {
            try ["wal-0", "wal-1"].map { try #require(try FileManager.default.attributesOfItem(atPath: dir + "/" + $0)[.size] as? Int) }
        }
        var ids: [TaskID] = []
        do {
            let store = try TaskStore(c)
            let payload = String(repeating: "x", count: 1000)
            for i in 0..<100 { ids.append(try await store.put("q", "\(i) \(payload)")) }
            #expect(try sizes().max()! > 64 << 10, "100 KB of records did not outgrow a 32 KiB file")
            store.close()
        }
        do {
            let store = try TaskStore(c)
            #expect(try sizes() == [32 << 10, 32 << 10])
            #expect(try store.readyIDs("q") == ids)
            ids.append(try await store.put("q", "after the trim"))
            store.close()
        }
        // Written with 1 MiB files, opened with 32 KiB ones.
        var big = c
        big.logFileSize = 1 << 20
        do {
            let store = try TaskStore(big)
            #expect(try sizes() == [1 << 20, 1 << 20])
            ids.append(try await store.put("q", "in a big log"))
            store.close()
        }
        let store = try TaskStore(c)
        defer { store.close() }
        #expect(try sizes() == [32 << 10, 32 << 10])
        #expect(try store.readyIDs("q") == ids)
    }

    /// A data directory written before the redo log (format 1, no log files) opens with
    /// everything in it, and is format 2 from then on.
    @Test func aFormatOneDirectoryOpens() async throws {
        let dir = freshDirectory()
        var ids: [TaskID] = []
        do {
            let store = try openStore(dir)
            for i in 0..<5 { ids.append(try await store.put("q", "task \(i)")) }
            store.close()
        }
        do {
            let engine = try StoreEngine(directory: dir, options: .init(), maxDeliveries: 10, logFileSize: 1 << 20)
            try engine.env.withWriteTransaction { (txn) throws(StorageError) in
                try txn.put(engine.t.meta, Array("format".utf8), [0, 0, 0, 1])
                _ = try txn.delete(engine.t.meta, Array("wal_batch".utf8))
            }
            try engine.env.sync()
        }
        for f in ["wal-0", "wal-1"] { try FileManager.default.removeItem(atPath: dir + "/" + f) }
        let store = try openStore(dir)
        defer { store.close() }
        #expect(try store.readyIDs("q") == ids)
        #expect(try await store.put("q", "after") > ids.last!)
        let format = try store.engineFormat()
        #expect(format == StoreEngine.formatVersion)
    }
}

@Suite struct RedoLogFileTests {
    static func batch(_ n: UInt64) -> LoggedBatch {
        LoggedBatch(number: n, now: 1000 + Millis(n), nextID: n, nextSeq: n, maxDeliveries: 10, ops: [.ack(n)])
    }

    /// Records come back in order up to the first missing number; records past the gap
    /// (a power loss kept later writes but not an earlier one) are never read again after
    /// the log restarts, even once new records reuse their numbers.
    @Test func aGapEndsTheReplayAndWhatFollowsItIsCleared() throws {
        let dir = freshDirectory()
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        do {
            let log = try RedoLog(directory: dir, fileSize: 4096)
            try log.restart(through: 0)
            for n: UInt64 in 1...80 where n != 40 { _ = try log.append(Self.batch(n)) }
            #expect(log.switches == 1)  // the stale records reach into wal-1
        }
        let log = try RedoLog(directory: dir, fileSize: 4096)
        #expect(try log.batches(after: 0).map(\.number) == Array(1...39))
        #expect(try log.batches(after: 30).map(\.number) == Array(31...39))
        try log.restart(through: 39)
        // 40 and up are free again: new records, new contents.
        func fresh(_ n: UInt64) -> LoggedBatch { var b = Self.batch(n); b.ops = [.release(n)]; return b }
        for n: UInt64 in 40...70 { _ = try log.append(fresh(n)) }
        let read = try RedoLog(directory: dir, fileSize: 4096).batches(after: 39)
        #expect(read == (40...70).map(fresh))
    }

    /// A record taken back (its transaction did not commit) is not read, and the next
    /// record takes its place.
    @Test func aRetractedRecordIsNotRead() throws {
        let dir = freshDirectory()
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let log = try RedoLog(directory: dir, fileSize: 4096)
        try log.restart(through: 0)
        _ = try log.append(Self.batch(1))
        _ = try log.append(Self.batch(2))
        log.retract()
        #expect(try RedoLog(directory: dir, fileSize: 4096).batches(after: 0).map(\.number) == [1])
        var replacement = Self.batch(2)
        replacement.ops = [.release(99)]
        _ = try log.append(replacement)
        #expect(try RedoLog(directory: dir, fileSize: 4096).batches(after: 0) == [Self.batch(1), replacement])
    }
}
