import Foundation
import Testing
@testable import TortoiseStorage

@Suite struct TaskStoreTests {
    @Test func putTakeIsFIFOPerQueue() async throws {
        let store = try openStore(freshDirectory())
        defer { store.close() }
        for i in 1...5 { _ = try await store.put("a", "a\(i)") }
        _ = try await store.put("b", "b1")
        var seen: [String] = []
        while let t = try await store.takeText("a") { seen.append(t) }
        #expect(seen == ["a1", "a2", "a3", "a4", "a5"])
        #expect(try await store.takeText("b") == "b1")
        #expect(try await store.takeText("b") == nil)
        #expect(try store.counts()["a"] == QueueCounts(ready: 0, inflight: 5))
    }

    @Test func deliveryCountsUpAndAckRemoves() async throws {
        let store = try openStore(freshDirectory())
        defer { store.close() }
        let id = try await store.put("q", "x")
        let first = try #require(try await store.take("q"))
        #expect(first.id == id && first.delivery == 1)
        _ = try await store.perform(.requeue(id, readyAt: nil))
        let second = try #require(try await store.take("q"))
        #expect(second.delivery == 2)
        #expect(try await store.perform(.ack(id)) == .acked)
        #expect(try store.counts()["q"] == nil)
        await #expect(throws: StorageError.self) { try await store.perform(.ack(id)) }
    }

    @Test func returnedTasksGoBackToTheirPlaceAtTheFront() async throws {
        let store = try openStore(freshDirectory())
        defer { store.close() }
        for i in 1...4 { _ = try await store.put("q", "t\(i)") }
        let t1 = try #require(try await store.take("q"))
        let t2 = try #require(try await store.take("q"))
        _ = try await store.perform(.release(t2.id))
        _ = try await store.perform(.requeue(t1.id, readyAt: nil))
        var seen: [String] = []
        while let t = try await store.takeText("q") { seen.append(t) }
        #expect(seen == ["t1", "t2", "t3", "t4"])
    }

    @Test func nackMovesToTheFailedStoreWithItsError() async throws {
        let store = try openStore(freshDirectory())
        defer { store.close() }
        let id = try await store.put("mail", "to: bob")
        _ = try await store.take("mail")
        #expect(try await store.perform(.nack(id, error: "SMTP timeout after 30s")) == .failed(queue: "mail"))
        let page = try store.failed(FailedQuery(), limit: 10)
        #expect(page.total == 1)
        let f = try #require(page.tasks.first)
        #expect(f.id == id && f.queue == "mail" && f.error == "SMTP timeout after 30s" && f.deliveries == 1)
        #expect(f.payload == Array("to: bob".utf8))
        #expect(f.group == ErrorFingerprint.group(of: "SMTP timeout after 99s"))
        #expect(try store.counts()["mail"] == QueueCounts(failed: 1))
    }

    @Test func replayKeepsTheIdGoesToTheBackAndCounts() async throws {
        let store = try openStore(freshDirectory())
        defer { store.close() }
        let id = try await store.put("q", "first")
        _ = try await store.take("q")
        _ = try await store.perform(.nack(id, error: "boom"))
        _ = try await store.put("q", "second")
        var all = FailedQuery()
        all.words = ["boom"]
        #expect(try await store.perform(.replay(all)) == .replayed(["q": 1]))
        #expect(try store.failed(FailedQuery(), limit: 10).total == 0)
        #expect(try await store.takeText("q") == "second")
        let again = try #require(try await store.take("q"))
        #expect(again.id == id && again.delivery == 1)
        _ = try await store.perform(.nack(id, error: "boom"))
        #expect(try store.failed(FailedQuery(), limit: 1).tasks.first?.replays == 1)
    }

    @Test func replayedTasksQueueUpInTheOrderTheyFailed() async throws {
        let store = try openStore(freshDirectory())
        defer { store.close() }
        for i in 1...4 { _ = try await store.put("q", "t\(i)") }
        for _ in 1...4 {
            let t = try #require(try await store.take("q"))
            _ = try await store.perform(.nack(t.id, error: "boom"))
        }
        #expect(try await store.perform(.replay(FailedQuery())) == .replayed(["q": 4]))
        var seen: [String] = []
        while let t = try await store.takeText("q") { seen.append(t) }
        #expect(seen == ["t1", "t2", "t3", "t4"])
    }

    @Test func deleteRemovesOnlyMatches() async throws {
        let store = try openStore(freshDirectory())
        defer { store.close() }
        for (i, err) in ["disk full", "timeout", "disk error"].enumerated() {
            let id = try await store.put("q\(i)", "p")
            _ = try await store.take("q\(i)")
            _ = try await store.perform(.nack(id, error: err))
        }
        var q = FailedQuery()
        q.words = ["disk"]
        #expect(try await store.perform(.delete(q)) == .deleted(2))
        #expect(try store.failed(FailedQuery(), limit: 10).tasks.map(\.error) == ["timeout"])
        #expect(try store.counts().keys.sorted() == ["q1"])
    }

    @Test func delayedRequeueWaitsThenComesBackAtTheFront() async throws {
        let store = try openStore(freshDirectory())
        defer { store.close() }
        let id = try await store.put("q", "late")
        _ = try await store.put("q", "next")
        _ = try await store.take("q")
        let at = currentMillis() + 300
        #expect(try await store.perform(.requeue(id, readyAt: at)) == .returned(.delayed(queue: "q")))
        #expect(try store.counts()["q"] == QueueCounts(ready: 1, delayed: 1))
        #expect(try store.nextDelayedDue() == at)
        let early = try await store.perform(.promoteDue)
        if currentMillis() < at - 50 { #expect(early == .promoted([:])) }
        while currentMillis() <= at { try await Task.sleep(for: .milliseconds(50)) }
        let due = try await store.perform(.promoteDue)
        #expect(due == .promoted(["q": 1]) || early == .promoted(["q": 1]))
        #expect(try await store.takeText("q") == "late")
    }

    @Test func deliveryLimitMovesTheTaskToFailed() async throws {
        let store = try openStore(freshDirectory(), maxDeliveries: 2)
        defer { store.close() }
        let id = try await store.put("q", "poison")
        _ = try await store.take("q")
        #expect(try await store.perform(.release(id)) == .returned(.ready(queue: "q")))
        _ = try await store.take("q")
        #expect(try await store.perform(.release(id)) == .returned(.failed(queue: "q")))
        let f = try #require(try store.failed(FailedQuery(), limit: 1).tasks.first)
        #expect(f.error == "delivery limit exceeded (2 deliveries)")
    }

    @Test func reopenReturnsInflightToTheFrontAndNeverReusesIds() async throws {
        let dir = freshDirectory()
        var store = try openStore(dir)
        let a = try await store.put("q", "a")
        let b = try await store.put("q", "b")
        _ = try await store.put("q", "c")
        _ = try await store.take("q")
        _ = try await store.take("q")
        _ = try await store.perform(.ack(b))
        store.close()
        store = try openStore(dir)
        defer { store.close() }
        #expect(store.recoveredAtOpen == 1)
        let again = try #require(try await store.take("q"))
        #expect(again.id == a && again.delivery == 2)
        #expect(try await store.takeText("q") == "c")
        let d = try await store.put("q", "d")
        #expect(d > 3, "ids are never reused across a restart")
    }

    @Test func delayedRequeueSurvivesReopen() async throws {
        let dir = freshDirectory()
        var store = try openStore(dir)
        let id = try await store.put("q", "x")
        _ = try await store.take("q")
        _ = try await store.perform(.requeue(id, readyAt: currentMillis() + 60_000))
        store.close()
        store = try openStore(dir)
        defer { store.close() }
        #expect(try store.counts()["q"] == QueueCounts(delayed: 1))
        #expect(try await store.take("q") == nil)
    }

    @Test func aSecondOpenOfTheSameDirectoryFails() throws {
        let dir = freshDirectory()
        let store = try openStore(dir)
        defer { store.close() }
        #expect {
            _ = try openStore(dir)
        } throws: { e in
            guard let e = e as? StorageError else { return false }
            return e.code == .locked && e.message.contains(dir)
        }
    }

    @Test func aNewerFormatIsRefused() throws {
        let dir = freshDirectory()
        do {
            let engine = try StoreEngine(directory: dir, options: .init(), maxDeliveries: 10, logFileSize: 1 << 20)
            try engine.env.withWriteTransaction { (txn) throws(StorageError) in
                try txn.put(engine.t.meta, Array("format".utf8), [0, 0, 0, 9])
            }
        }
        #expect {
            _ = try openStore(dir)
        } throws: { e in
            (e as? StorageError)?.code == .formatTooNew
        }
    }

    @Test func theMapGrowsAndThenSaysFullWithoutHarm() async throws {
        let store = try openStore(freshDirectory(), initialMapSize: 256 << 10, maxMapSize: 4 << 20)
        defer { store.close() }
        let payload = String(repeating: "x", count: 16 << 10)
        var stored: [TaskID] = []
        var fullError: StorageError?
        for _ in 0..<1000 {
            do {
                stored.append(try await store.put("q", payload))
            } catch let e as StorageError {
                fullError = e
                break
            }
        }
        let e = try #require(fullError)
        #expect(e.code == .storageFull)
        #expect(e.message.contains("storage full"))
        #expect(stored.count > 20) // grew past the 256 KiB start
        #expect(try store.counts()["q"]?.ready == stored.count)
        // Acks still work when full, and make room for puts again.
        for _ in 0..<40 {
            let t = try #require(try await store.take("q"))
            _ = try await store.perform(.ack(t.id))
        }
        _ = try await store.put("q", payload)
    }

    @Test func theMapGrowsAheadOfTheFile() throws {
        // A batch that overflows the map is undone and applied again once the map has
        // grown, doing its work twice while every other change waits (a big REPLAY, say).
        // So the map is kept at least twice what the file uses.
        var options = LMDBEnvironment.Options()
        options.initialMapSize = 256 << 10
        options.maxMapSize = 64 << 20
        let engine = try StoreEngine(directory: freshDirectory(), options: options, maxDeliveries: 10, logFileSize: 1 << 20)
        let payload = [UInt8](repeating: 1, count: 4000)
        for _ in 0..<150 {
            let r = engine.apply([.put(queue: "q", payload: payload)])
            guard case .success(.put)? = r.first else { Issue.record("put failed: \(r)"); return }
            #expect(engine.env.usedBytes <= engine.env.mapSize / 2, "\(engine.env.usedBytes) used in a map of \(engine.env.mapSize)")
        }
        #expect(engine.env.mapSize >= 1 << 20)
    }

    @Test func aDamagedQueueCountIsCountedAgainNotFailingItsBatch() throws {
        let engine = try StoreEngine(directory: freshDirectory(), options: .init(), maxDeliveries: 10, logFileSize: 1 << 20)
        func outcome(_ op: StoreOperation) throws -> StoreOutcome { try engine.apply([op])[0].get() }
        for p in ["a", "b", "c", "d"] { _ = try outcome(.put(queue: "q", payload: Array(p.utf8))) }
        _ = try outcome(.put(queue: "other", payload: [1]))
        guard case .taken(let a?) = try outcome(.take(queue: "q")),
              case .taken(let b?) = try outcome(.take(queue: "q")),
              case .taken(let c?) = try outcome(.take(queue: "q")) else { Issue.record("take"); return }
        _ = try outcome(.nack(b.id, error: "boom"))
        _ = try outcome(.requeue(c.id, readyAt: currentMillis() + 3_600_000))
        let truth = QueueCounts(ready: 1, inflight: 1, delayed: 1, failed: 1)
        #expect(try engine.counts()["q"] == truth)
        // The record of "q" damaged: a count past Int.max.
        try engine.env.withWriteTransaction { (txn) throws(StorageError) in
            try txn.put(engine.t.queues, Array("q".utf8), [0x80] + [UInt8](repeating: 0, count: 31))
        }
        // STATS still answers, from the tables.
        #expect(try engine.counts()["q"] == truth)
        #expect(try engine.counts()["other"] == QueueCounts(ready: 1))
        // A batch that changes "q" (and another queue) goes through, and writes the count anew.
        let results = engine.apply([.put(queue: "q", payload: [9]), .ack(a.id), .put(queue: "other", payload: [2])])
        #expect(results.allSatisfy { if case .success = $0 { true } else { false } }, "\(results)")
        #expect(engine.countsRepaired == 1)
        #expect(engine.repairedByLastBatch == ["q"])
        _ = try outcome(.put(queue: "q", payload: [10]))
        #expect(engine.repairedByLastBatch.isEmpty)
        _ = try outcome(.take(queue: "q"))
        #expect(try engine.counts()["q"] == QueueCounts(ready: 2, inflight: 1, delayed: 1, failed: 1))
        #expect(try engine.counts()["other"] == QueueCounts(ready: 2))
        let stored = try engine.env.withReadTransaction { (txn) throws(StorageError) in try txn.get(engine.t.queues, Array("q".utf8)) }
        #expect(try QueueCounts(decoding: #require(stored)) == QueueCounts(ready: 2, inflight: 1, delayed: 1, failed: 1))
    }

    @Test func countsStayExactWhenBatchesChangeAQueueManyTimes() async throws {
        // A batch keeps each queue's counts in memory and writes them once at its end.
        let dir = freshDirectory()
        var store = try openStore(dir)
        let puts = await store.performAll(Array(repeating: .put(queue: "a", payload: [1]), count: 100)
            + Array(repeating: .put(queue: "b", payload: [2]), count: 100) + [.put(queue: "c", payload: [3])])
        #expect(puts.allSatisfy { if case .success(.put) = $0 { true } else { false } })
        let takes = await store.performAll(Array(repeating: .take(queue: "a"), count: 60) + [.take(queue: "c")])
        let taken = takes.compactMap { r -> TaskID? in if case .success(.taken(let t?)) = r { t.id } else { nil } }
        #expect(taken.count == 61)
        let a = Array(taken.prefix(60))
        let settled = await store.performAll(a[0..<20].map { .ack($0) } + a[20..<40].map { .nack($0, error: "boom") }
            + a[40..<60].map { .requeue($0, readyAt: nil) } + [.ack(taken[60]), .ack(taken[60])])
        // The second ACK of the same task fails alone; the rest of its batch stands.
        #expect(settled.dropLast().allSatisfy { if case .success = $0 { true } else { false } })
        if case .failure(let e)? = settled.last { #expect(e.code == .notFound) } else { Issue.record("a task was acked twice") }
        let expected: [String: QueueCounts] = ["a": QueueCounts(ready: 60, failed: 20), "b": QueueCounts(ready: 100)]
        #expect(try store.counts() == expected)
        store.close()
        store = try openStore(dir)
        defer { store.close() }
        #expect(try store.counts() == expected)
        #expect(try store.readyIDs("a").count == 60)
    }

    @Test func groupCommitSharesFlushesAmongConcurrentCallers() async throws {
        let store = try openStore(freshDirectory())
        defer { store.close() }
        let before = store.syncCount
        try await withThrowingTaskGroup(of: Void.self) { group in
            for c in 0..<64 {
                group.addTask {
                    for i in 0..<10 { _ = try await store.put("q\(c % 4)", "\(c)-\(i)") }
                }
            }
            try await group.waitForAll()
        }
        let flushes = store.syncCount - before
        #expect(try store.counts().values.map(\.ready).reduce(0, +) == 640)
        #expect(flushes < 320, "640 puts from 64 callers took \(flushes) flushes")
    }
}
